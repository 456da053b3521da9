"""Storage formats: int4 packing, GPTQ vs round-to-nearest, Q4_K blocks, GGUF export."""

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize

from tests.optimize.conftest import tiny_model
from tokenmill.model.loader.gguf import GGUFCheckpoint, unpermute
from tokenmill.model.quant import int4
from tokenmill.optimize.checkpoint import float_state, unfuse
from tokenmill.optimize.gguf_export import error_bound, permute, quantize_q4_k, verify, write_gguf
from tokenmill.optimize.gptq import gptq, output_error, rtn


def test_int4_pack_round_trips_and_puts_even_columns_low():
    q = torch.randint(0, 16, (5, 64), dtype=torch.uint8)
    packed = int4.pack(q)
    assert packed.shape == (5, 32)
    assert torch.equal(packed[:, 0] & 0x0F, q[:, 0]) and torch.equal(packed[:, 0] >> 4, q[:, 1])
    assert torch.equal(int4.unpack(packed), q)


@pytest.mark.parametrize("group", [32, 128])
def test_rtn_error_is_within_half_a_step(group):
    w = torch.randn(8, 256)
    qw = rtn(w, group)
    err = (qw.dequantize(group) - w).abs().reshape(8, -1, group).amax(-1)
    assert (err <= qw.scales.half().float() * 0.5 + 1e-3).all()


def test_gptq_beats_round_to_nearest_on_correlated_inputs():
    gen = torch.Generator().manual_seed(0)
    mix = torch.randn(128, 128, generator=gen)
    x = torch.randn(2048, 128, generator=gen) @ mix  # correlated input channels
    h = x.T @ x / x.shape[0]
    w = torch.randn(64, 128, generator=gen) / 10
    e_rtn = output_error(w, rtn(w, 32).dequantize(32), h)
    e_gptq = output_error(w, gptq(w, h, 32).dequantize(32), h)
    assert e_gptq < 0.8 * e_rtn, (e_gptq, e_rtn)


def test_q4_k_blocks_decode_with_gguf_within_the_bound():
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((4, 512)) * 0.05).astype(np.float32)
    w[0, :32] += 0.5  # one sub-block far from the others
    got = dequantize(quantize_q4_k(w), Q.Q4_K).reshape(w.shape)
    ratio = (np.abs(got - w).reshape(-1, 32).max(1) / error_bound(w, Q.Q4_K)).max()
    assert ratio <= 1.0
    rel = np.sqrt(((got - w) ** 2).mean() / (w**2).mean())
    assert rel < 0.12


def test_the_bound_catches_a_wrong_layout():
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((2, 256)) * 0.05).astype(np.float32)
    blocks = quantize_q4_k(w)
    blocks[:, 16:144] = (blocks[:, 16:144] >> 4) | (blocks[:, 16:144] << 4)  # swap nibbles
    got = dequantize(blocks, Q.Q4_K).reshape(w.shape)
    assert (np.abs(got - w).reshape(-1, 32).max(1) / error_bound(w, Q.Q4_K)).max() > 1.0


def test_permute_inverts_the_loaders_unpermute():
    x = np.arange(6 * 16 * 3, dtype=np.float32).reshape(6 * 16, 3)
    assert np.array_equal(unpermute(permute(x, 6), 6), x)


@pytest.mark.parametrize("kind", ["q8_0", "q4_k"])
def test_gguf_export_reads_back_through_our_loader(tmp_path, tiny_tokenizer, kind):
    model = tiny_model()
    state = float_state(model)
    path = tmp_path / "m.gguf"
    counts = write_gguf(path, model.arch, tiny_tokenizer, state, kind)
    checks = verify(path, model.arch, state)
    assert sum(counts.values()) == sum(c["tensors"] for c in checks.values())
    assert all(c["worst_error_over_bound"] <= 1.0 for c in checks.values())
    ckpt = GGUFCheckpoint.open(path)
    assert ckpt.arch.num_layers == 3 and ckpt.arch.num_kv_heads == 2
    assert ckpt.arch.eos_token_ids == (tiny_tokenizer.eos_token_id,)
    tok = ckpt.tokenizer()
    text = "the quick brown fox <|im_end|>"
    assert tok.encode(text) == tiny_tokenizer.encode(text)
    assert tok.chat_template == tiny_tokenizer.chat_template
    want = unfuse(model.arch, state)
    for name, w in ckpt.weights(torch.float32):
        step = 1 / 127 if kind == "q8_0" else 1 / 8
        assert torch.allclose(w, want[name], atol=step * want[name].abs().max().item()), name
