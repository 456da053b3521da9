"""Native CPU kernels against the PyTorch arithmetic they replace."""

import os
import shutil

import pytest
import torch

from tokenmill.model.kernels import cpu_kernels
from tokenmill.model.layers import attention
from tokenmill.model.layers.attention import PagedAttention
from tokenmill.model.layers.attention_metadata import AttentionMetadata, PrefillSeq
from tokenmill.model.quant.int8 import Int8Linear, int8_matmul, quantize_rows

kernels = cpu_kernels()
# Skip only where torch's extension builder finds no compiler: where one exists, a build
# that fails (a compile error, a missing header) must fail these tests, not skip them.
needs_kernels = pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "c++")) is None,
    reason="no C++ compiler here: the PyTorch fallback path is used",
)


def _decode_case(dtype, B=5, H=9, Hkv=3, D=64, block=16, num_blocks=64, lens=None):
    """A decode step over scattered blocks: (q, cache, metadata with block tables)."""
    g = torch.Generator().manual_seed(0)
    cache = torch.randn(2, num_blocks * block, Hkv, D, generator=g).to(dtype)
    lens = torch.tensor([1, 17, 40, 3, 100] if lens is None else lens)[:B]
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


@needs_kernels
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_decode_attention_short_and_long_sequences_and_threads(dtype, tol):
    """A sequence whose rows fit kTouchSequenceBytes (512 KB; 341 positions of 3 float32
    heads of 64) has them read once for all its heads, a longer one per head; either way
    the result is the sdpa reference's, and the same bits however the batch's (sequence,
    head) groups split over threads (a thread may start in the middle of a sequence)."""
    lens = [341, 342, 5, 700, 33, 16, 17]
    q, cache, meta = _decode_case(dtype, B=len(lens), num_blocks=320, lens=lens)
    ref = _sdpa_reference(PagedAttention(9, 3, 64), q.to(dtype), cache, meta)
    runs = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 4):
            torch.set_num_threads(n)
            runs.append(
                kernels.decode_attention(q, cache, meta.block_tables, meta.decode_lens, 16, 0.125)
            )
    finally:
        torch.set_num_threads(threads)
    assert (runs[0] - ref).abs().max().item() < tol
    assert all(torch.equal(r, runs[0]) for r in runs[1:])


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


def _prefill_reference(q, k, v, pos, window, scale):
    """Causal attention in float64, one query head at a time: row i attends keys up to
    pos + i, and with a window no further back than window - 1 before it."""
    T, H, D = q.shape
    C, Hkv, _ = k.shape
    rows = torch.arange(T)[:, None] + pos
    cols = torch.arange(C)[None, :]
    ok = cols <= rows
    if window:
        ok &= cols > rows - window
    out = torch.empty(T, H, D, dtype=torch.float64)
    for h in range(H):
        kv = h // (H // Hkv)
        s = (q[:, h].double() @ k[:, kv].double().T * scale).masked_fill(~ok, float("-inf"))
        out[:, h] = s.softmax(-1) @ v[:, kv].double()
    return out


PREFILL_VARIANTS = [v for v in VARIANTS if kernels.prefill_attention_lanes(v) > 0]


@needs_kernels
@pytest.mark.parametrize("variant", PREFILL_VARIANTS)
@pytest.mark.parametrize(
    "T,C,H,Hkv,D,window,base",
    [
        (100, 100, 9, 3, 64, 0, 0),  # SmolLM2's heads, a whole prompt
        (37, 200, 9, 3, 64, 0, 0),  # a later chunk: 163 cached keys before it
        (1, 77, 9, 3, 64, 0, 0),  # one query row
        (65, 65, 24, 3, 64, 0, 0),  # 8 heads a group: 8 rows a call on AVX-512
        (130, 130, 4, 1, 256, 0, 0),  # Gemma 3 270M's heads
        (70, 300, 4, 1, 256, 50, 0),  # its sliding window, over cached keys
        (90, 400, 9, 3, 72, 33, 100),  # a window, keys from position 100, a scalar tail
        (5, 5, 2, 2, 64, 0, 0),  # no grouping
    ],
)
def test_prefill_attention_matches_float64(variant, T, C, H, Hkv, D, window, base):
    g = torch.Generator().manual_seed(T + C)
    q, k, v = (torch.randn(n, h, D, generator=g) for n, h in ((T, H), (C, Hkv), (C, Hkv)))
    pos = C - T
    got = kernels.prefill_attention(q, k, v, pos, base, window, D**-0.5, variant=variant)
    ref = _prefill_reference(q, k, v, pos, window, D**-0.5)
    assert got.shape == (T, H, D)
    assert (got.double() - ref).abs().max().item() < 1e-5


@needs_kernels
@pytest.mark.parametrize("variant", PREFILL_VARIANTS)
@pytest.mark.parametrize("window", [0, 40])
def test_prefill_attention_rows_do_not_depend_on_the_chunking(variant, window):
    """A row's result is the same bits whether its prompt ran in one call or in chunks
    (the later ones reading cached keys from some first position on), and whatever rows
    share its call; it reads q, k and v in place from a fused qkv output."""
    T, H, Hkv, D = 150, 9, 3, 64
    g = torch.Generator().manual_seed(7)
    qkv = torch.randn(T, (H + 2 * Hkv) * D, generator=g)
    q = qkv[:, : H * D].view(T, H, D)
    k = qkv[:, H * D : (H + Hkv) * D].view(T, Hkv, D)
    v = qkv[:, (H + Hkv) * D :].view(T, Hkv, D)
    whole = kernels.prefill_attention(q, k, v, 0, 0, window, 0.125, variant=variant)
    for start, end in ((0, 23), (23, 24), (24, 101), (101, 150)):
        first = max(0, start - window + 1) if window else 0  # as PagedAttention gathers
        part = kernels.prefill_attention(
            q[start:end],
            k[first:end].contiguous(),
            v[first:end].contiguous(),
            start - first,
            first,
            window,
            0.125,
            variant=variant,
        )
        assert torch.equal(part, whole[start:end]), (start, end)


@needs_kernels
def test_prefill_attention_refuses_what_it_cannot_compute():
    variant = PREFILL_VARIANTS[0]
    lanes = kernels.prefill_attention_lanes(variant)
    q, k = torch.randn(4, lanes + 1, 64), torch.randn(8, 1, 64)
    with pytest.raises(RuntimeError, match="lanes"):
        kernels.prefill_attention(q, k, k, 4, 0, 0, 0.125, variant=variant)
    q = torch.randn(4, 3, 64)
    with pytest.raises(RuntimeError, match="reach key"):
        kernels.prefill_attention(q, k, k, 5, 0, 0, 0.125, variant=variant)
    assert kernels.prefill_attention_lanes("scalar") == 0
    with pytest.raises(RuntimeError, match="no prefill attention kernel"):
        kernels.prefill_attention(q, k, k, 4, 0, 0, 0.125, variant="scalar")


@needs_kernels
@pytest.mark.parametrize("window", [None, 20])
def test_paged_prefill_uses_the_kernel_and_agrees_with_aten(monkeypatch, window):
    """PagedAttention's prefill of a chunk after cached positions: the native kernel's
    result and ATen's (the path without kernels) agree to float32 rounding."""
    H, Hkv, D, block = 9, 3, 64, 16
    attn = PagedAttention(H, Hkv, D, sliding_window=window)
    g = torch.Generator().manual_seed(3)
    cached, new = 45, 30
    cache = torch.randn(2, 8 * block, Hkv, D, generator=g)
    q = torch.randn(new, H, D, generator=g)
    k, v = torch.randn(2, new, Hkv, D, generator=g)
    table = [5, 1, 6, 2, 7]
    slots = torch.tensor([table[p // block] * block + p % block for p in range(cached + new)])
    cache[0, slots[cached:]] = k
    cache[1, slots[cached:]] = v
    seq = PrefillSeq(query_start=0, query_len=new, context_len=cached + new, context_slots=slots)
    meta = AttentionMetadata(slots[cached:], [seq], new)
    calls = []
    real = attention.inference_kernels

    def counting(*tensors):
        found = real(*tensors)
        calls.append(found is not None)
        return found

    monkeypatch.setattr(attention, "inference_kernels", counting)
    native = attn.attend(q, k, v, cache, meta)
    assert calls and all(calls)
    monkeypatch.setattr(attention, "inference_kernels", lambda *t: None)
    aten = attn.attend(q, k, v, cache, meta)
    torch.testing.assert_close(native, aten, rtol=1e-5, atol=1e-5)


@needs_kernels
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("width", [1, 5, 16, 17, 100, 49152])
def test_argmax_rows_is_torchs_first_largest_index(variant, width):
    g = torch.Generator().manual_seed(width)
    x = torch.randn(12, width, generator=g)
    x[1] = 0.0  # all equal: the first
    x[2] = float("-inf")
    x[3, width // 2 :] = 7.0  # ties in later vectors and the tail: the first of them
    x[4, -1] = 100.0  # the last element (a tail where width % 16 != 0)
    x[5].copy_(x[5].round())  # many small-integer ties spread over lanes
    x[6, 0] = -0.0  # -0.0 and 0.0 tie
    x[6, 1:] = -1.0
    x[6, width - 1] = 0.0
    x[7] = float("-inf")
    x[7, width - 1] = float("inf")
    got = kernels.argmax_rows(x, variant=variant)
    assert got.dtype == torch.int64
    assert torch.equal(got, x.max(dim=1).indices)
    assert kernels.argmax_rows(x[:0], variant=variant).shape == (0,)
