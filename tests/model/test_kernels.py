"""Native CPU kernels against the PyTorch arithmetic they replace."""

import os
import shutil

import pytest
import torch

from tokenmill.model.kernels import cpu_kernels
from tokenmill.model.layers.attention import PagedAttention
from tokenmill.model.layers.attention_metadata import AttentionMetadata
from tokenmill.model.quant.int8 import Int8Linear, int8_matmul, quantize_rows

kernels = cpu_kernels()
# Skip only where torch's extension builder finds no compiler: where one exists, a build
# that fails (a compile error, a missing header) must fail these tests, not skip them.
needs_kernels = pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "c++")) is None,
    reason="no C++ compiler here: the PyTorch fallback path is used",
)


def _decode_case(dtype, B=5, H=9, Hkv=3, D=64, block=16, num_blocks=64):
    g = torch.Generator().manual_seed(0)
    cache = torch.randn(2, num_blocks * block, Hkv, D, generator=g).to(dtype)
    lens = torch.tensor([1, 17, 40, 3, 100])[:B]
    width = int(lens.max())
    perm = torch.randperm(num_blocks - 1, generator=g) + 1
    per_seq = -(-width // block)
    tables = perm[: B * per_seq].view(B, per_seq)
    slots = (tables[:, :, None] * block + torch.arange(block)).view(B, -1)[:, :width]
    mask = torch.arange(width)[None] < lens[:, None]
    slots = torch.where(mask, slots, 0)
    q = torch.randn(B, H, D, generator=g)
    meta = AttentionMetadata(
        slot_mapping=torch.zeros(0, dtype=torch.int64), prefills=[], num_prefill_tokens=0,
        decode_slots=slots, decode_mask=mask[:, None, None, :], decode_lens=lens,
    )
    return q, cache, meta


@needs_kernels
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_decode_attention_kernel_matches_sdpa(dtype, tol):
    assert kernels is not None, "a C++ compiler is here but the kernels did not build"
    q, cache, meta = _decode_case(dtype)
    attn = PagedAttention(9, 3, 64)
    ref_meta = AttentionMetadata(meta.slot_mapping, [], 0, meta.decode_slots, meta.decode_mask)
    ref = attn._decode(q.to(dtype), cache, ref_meta).float()  # no lens: the SDPA path
    got = kernels.decode_attention(q, cache, meta.decode_slots, meta.decode_lens, 64**-0.5)
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() < tol
    # A one-token context attends to exactly that token's value.
    v_first = cache[1, meta.decode_slots[0, 0]].float()  # (Hkv, D)
    assert torch.allclose(got[0], v_first.repeat_interleave(3, dim=0), atol=tol)


def test_quantize_rows_is_symmetric_per_channel():
    w = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [127.0, 3.0, -127.0]])
    q, scale = quantize_rows(w)
    assert q.dtype == torch.int8
    assert q[0].tolist() == [64, -127, 32] and q[1].tolist() == [0, 0, 0]
    assert q[2].tolist() == [127, 3, -127]
    assert torch.allclose(q.float() * scale[:, None], w, atol=scale.max().item())


@pytest.mark.parametrize("m", [1, 7, 64])
def test_int8_linear_close_to_float_and_batch_invariant(m):
    g = torch.Generator().manual_seed(m)
    w, b = torch.randn(96, 64, generator=g), torch.randn(96, generator=g)
    x = torch.randn(m, 64, generator=g)
    lin = Int8Linear(w, b)
    y = lin(x)
    ref = torch.nn.functional.linear(x, w, b)
    assert ((y - ref).norm() / ref.norm()).item() < 0.02
    # Per-row activation scales: a row's result does not depend on its neighbours.
    alone = torch.cat([lin(x[i : i + 1]) for i in range(m)])
    assert torch.equal(alone, y)
    # The native and the ATen paths compute the same thing.
    aten = int8_matmul(x, lin.qweight.t(), lin.scale) + b
    assert torch.allclose(y, aten, atol=1e-4, rtol=1e-5)
