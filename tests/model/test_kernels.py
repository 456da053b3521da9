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
    """A decode step over scattered blocks: (q, cache, metadata with block tables)."""
    g = torch.Generator().manual_seed(0)
    cache = torch.randn(2, num_blocks * block, Hkv, D, generator=g).to(dtype)
    lens = torch.tensor([1, 17, 40, 3, 100])[:B]
    per_seq = -(-int(lens.max()) // block)
    perm = torch.randperm(num_blocks - 1, generator=g) + 1
    tables = perm[: B * per_seq].view(B, per_seq)
    q = torch.randn(B, H, D, generator=g)
    meta = AttentionMetadata(
        slot_mapping=torch.zeros(0, dtype=torch.int64),
        prefills=[],
        num_prefill_tokens=0,
        decode_lens=lens,
        block_tables=tables,
        block_size=block,
    )
    return q, cache, meta


def _sdpa_reference(attn, q, cache, meta):
    """The PyTorch path, on slots derived from the block tables."""
    slots, mask = meta.decode_slots_and_mask()
    ref_meta = AttentionMetadata(meta.slot_mapping, [], 0, slots, mask)
    return attn._decode(q, cache, ref_meta).float()


@needs_kernels
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_decode_attention_kernel_matches_sdpa(dtype, tol):
    assert kernels is not None, "a C++ compiler is here but the kernels did not build"
    q, cache, meta = _decode_case(dtype)
    attn = PagedAttention(9, 3, 64)
    ref = _sdpa_reference(attn, q.to(dtype), cache, meta)
    got = kernels.decode_attention(q, cache, meta.block_tables, meta.decode_lens, 16, 64**-0.5)
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() < tol
    # A one-token context attends to exactly that token's value.
    first_slot = meta.block_tables[0, 0] * 16
    v_first = cache[1, first_slot].float()  # (Hkv, D)
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


VARIANTS = kernels.quant_variants() if kernels is not None else []


@needs_kernels
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_decode_attention_every_variant(variant, dtype, tol):
    q, cache, meta = _decode_case(dtype, D=72)  # 72: a head size with a scalar tail
    ref = _sdpa_reference(PagedAttention(9, 3, 72), q.to(dtype), cache, meta)
    got = kernels.decode_attention(
        q, cache, meta.block_tables, meta.decode_lens, 16, 72**-0.5, variant=variant
    )
    assert (got - ref).abs().max().item() < tol
    with pytest.raises(RuntimeError, match="block table"):
        kernels.decode_attention(q, cache, meta.block_tables[:, :2], meta.decode_lens, 16, 0.1)


def _rms_reference(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


@needs_kernels
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("d", [576, 13])
def test_rms_norm_with_and_without_residual(variant, d):
    g = torch.Generator().manual_seed(d)
    x, res, w = torch.randn(5, d, generator=g), torch.randn(5, d, generator=g), torch.randn(d)
    out = kernels.rms_norm(x, w, 1e-5, variant=variant)
    torch.testing.assert_close(out, _rms_reference(x, w, 1e-5), rtol=2e-6, atol=2e-6)
    total = x + res
    x_before = x.clone()
    out = kernels.rms_norm(x, w, 1e-5, res, variant=variant)
    assert torch.equal(res, total) and torch.equal(x, x_before)  # residual += x, in place
    torch.testing.assert_close(out, _rms_reference(total, w, 1e-5), rtol=2e-6, atol=2e-6)


@needs_kernels
@pytest.mark.parametrize("variant", VARIANTS)
def test_silu_mul_matches_torch_over_a_wide_range(variant):
    # Gate values from -100 to 100: exp's clamps and both tails of the sigmoid.
    gate = torch.linspace(-100, 100, 1531).repeat(3, 1)
    gate[1] = torch.randn(1531, generator=torch.Generator().manual_seed(0)) * 4
    up = torch.randn(3, 1531, generator=torch.Generator().manual_seed(1))
    got = kernels.silu_mul(torch.cat([gate, up], dim=1), variant=variant)
    ref = torch.nn.functional.silu(gate) * up
    torch.testing.assert_close(got, ref, rtol=4e-7 * 4, atol=1e-30)


@needs_kernels
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
def test_rope_write_kv_rotates_and_stores(variant, cache_dtype):
    from tokenmill.model.layers.rotary import RotaryEmbedding

    nh, nkv, hd, t = 9, 3, 64, 6
    g = torch.Generator().manual_seed(2)
    qkv = torch.randn(t, (nh + 2 * nkv) * hd, generator=g)
    rot = RotaryEmbedding(hd, 64, 10000.0, None)
    positions = torch.tensor([0, 5, 9, 33, 2, 63])
    cos, sin = rot.cos_sin(positions, torch.float32)
    q, k, v = qkv.split((nh * hd, nkv * hd, nkv * hd), dim=-1)
    q_ref = RotaryEmbedding.apply(q.reshape(t, nh, hd), cos, sin)
    k_ref = RotaryEmbedding.apply(k.reshape(t, nkv, hd), cos, sin)
    v_ref = v.reshape(t, nkv, hd).clone()
    cache = torch.zeros(2, 40, nkv, hd, dtype=cache_dtype)
    slots = torch.tensor([3, 39, 0, 17, 18, 4])
    kernels.rope_write_kv(qkv, cos, sin, cache, slots, nh, nkv, variant=variant)
    torch.testing.assert_close(qkv[:, : nh * hd].view(t, nh, hd), q_ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(cache[0, slots].float(), k_ref.to(cache_dtype).float())
    torch.testing.assert_close(cache[1, slots].float(), v_ref.to(cache_dtype).float())
    untouched = torch.ones(40, dtype=torch.bool)
    untouched[slots] = False
    assert not cache[:, untouched].any()
    with pytest.raises(RuntimeError, match="outside the cache"):
        kernels.rope_write_kv(qkv, cos, sin, cache, slots + 40, nh, nkv, variant=variant)
