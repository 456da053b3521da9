"""Every tensor type in the Gemma 3 Q4_K_M file loads, and `gguf`'s dequantization (what
the loader uses) agrees with an independent implementation of each block format."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

from tokenmill.model.loader.gguf import GGUFCheckpoint

pytestmark = pytest.mark.slow


def q5_0_reference(raw: np.ndarray) -> np.ndarray:
    """ggml's Q5_0: blocks of 32 weights in 22 bytes: an fp16 scale d, 32 high bits (one
    per weight, little-endian u32), then 16 bytes of low nibbles (weight j in the low
    nibble of byte j, weight j + 16 in its high nibble). w = d * (5-bit value - 16)."""
    blocks = raw.reshape(-1, 22)
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # (nb, 1)
    high = blocks[:, 2:6].copy().view("<u4")  # (nb, 1)
    low = blocks[:, 6:]  # (nb, 16)
    nibbles = np.concatenate([low & 0x0F, low >> 4], axis=1).astype(np.int32)  # (nb, 32)
    bits = (high >> np.arange(32, dtype=np.uint32)) & 1  # (nb, 32)
    return (d * ((nibbles | (bits.astype(np.int32) << 4)) - 16)).reshape(-1)


def transformers_reference(raw: np.ndarray, kind: T) -> np.ndarray:
    from transformers.integrations.gguf.dequant import dequantize as hf_dequantize

    return hf_dequantize(torch.from_numpy(raw.copy()), int(kind)).numpy()


REFERENCES = {
    T.F32: lambda raw, kind: raw.view(np.float32),
    T.Q5_0: lambda raw, kind: q5_0_reference(raw),
    T.Q8_0: transformers_reference,
    T.Q4_K: transformers_reference,
    T.Q6_K: transformers_reference,
}


@pytest.fixture(scope="module")
def checkpoint(gemma_file) -> GGUFCheckpoint:
    return GGUFCheckpoint.open(gemma_file)


def test_file_holds_the_expected_types(checkpoint):
    kinds = {t.tensor_type for t in checkpoint.file.tensors}
    assert kinds == set(REFERENCES), f"new tensor types to cover: {kinds - set(REFERENCES)}"


@pytest.mark.parametrize("kind", list(REFERENCES), ids=lambda k: k.name)
def test_dequantization_matches_an_independent_reference(checkpoint, kind):
    tensor = min(
        (t for t in checkpoint.file.tensors if t.tensor_type == kind), key=lambda t: t.data.size
    )
    ours = dequantize(tensor.data, tensor.tensor_type).reshape(-1)
    ref = REFERENCES[kind](np.asarray(tensor.data), kind)
    assert ours.size == int(np.prod(tensor.shape)) == ref.size
    np.testing.assert_array_equal(ours, ref)
    assert np.abs(ours).max() > 0


def test_every_tensor_loads_with_its_hf_name(checkpoint, gemma):
    """The loader's state dict covers the model exactly (load_model is strict), and the
    norm weights come back as HF holds them (llama.cpp stored 1 + w)."""
    names = {name for name, _ in gemma.model.named_parameters()}
    assert len(names) == 2 + 18 * 10  # embeddings, final norm; per layer 4 linears, 6 norms
    norm = gemma.model.layers[0].input_layernorm.weight
    stored = next(t for t in checkpoint.file.tensors if t.name == "blk.0.attn_norm.weight")
    np.testing.assert_allclose(norm.numpy() + 1, stored.data.view(np.float32), atol=1e-6)
