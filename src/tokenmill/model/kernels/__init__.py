"""Native CPU kernels: one torch C++ extension, built once per source version.

`make install` builds it (`python -m tokenmill.model.kernels`); otherwise the first
use builds it. The build lands in ~/.cache/tokenmill/kernels-<digest>, where the digest
covers the sources, the compiler flags, and the torch and Python versions, so an edit
or an upgrade builds afresh and a stale binary is never loaded.

The binary runs on any x86-64 CPU: it is compiled for the baseline target, and the
AVX2 and AVX-512 kernels are compiled for their own targets (per-file pragmas) and
chosen at run time from cpuid. Each loader returns None when the kernels cannot be
built here (no compiler): callers keep a pure-PyTorch path for that case, so nothing
depends on a compiler being present, only speed does.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import sys
import time
from pathlib import Path

import torch

from tokenmill.files import write_atomically

log = logging.getLogger(__name__)
_HERE = Path(__file__).parent
# No -march: the binary must not fault on a CPU without an instruction it uses. The
# fast paths choose their instruction sets per file (isa_avx2.cpp, ...). No fast-math
# either: the SIMD kernels order their sums by hand, and the portable ones serve as the
# reference, so infinities and NaNs must behave as IEEE says (and glibc's vector math
# library, which fast-math pulls in, is not needed).
_CFLAGS = ("-O3", "-fopenmp-simd")
# Compiled units; bindings.cpp includes the torch-facing files (see its header).
_SOURCES = (
    "bindings.cpp",
    "quant_scalar.cpp",
    "ops_scalar.cpp",
    "isa_avx2.cpp",
    "isa_avx512.cpp",
    "isa_amx.cpp",
)
_INCLUDED = (
    "dispatch.cpp",
    "int8_linear.cpp",
    "layer_ops.cpp",
    "quant_ops.cpp",
    "layer_stack.cpp",
    "avx512_hsum.h",
    "ops.h",
    "ops_simd.h",
    "quant.h",
    "quant_simd.h",
)


def source_digest() -> str:
    """12 hex digits naming this build: sources, flags, torch, Python, machine."""
    h = hashlib.sha256()
    for name in _SOURCES + _INCLUDED:
        h.update(name.encode() + b"\0" + (_HERE / name).read_bytes())
    # The recipe tag changes whenever the build recipe does, so no build directory is
    # shared by two recipes (ninja would rebuild back and forth between them).
    recipe = (_CFLAGS, torch.__version__, sys.version_info[:2], platform.machine(), "copies-v1")
    h.update(repr(recipe).encode())
    return h.hexdigest()[:12]


def build_dir() -> Path:
    """Where this version's build lives ($XDG_CACHE_HOME or ~/.cache, then tokenmill/)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "tokenmill" / f"kernels-{source_digest()}"


def build(verbose: bool = False):
    """Compile (or, when the build is up to date, just load) the extension module.
    Raises when it cannot be built."""
    from torch.utils.cpp_extension import load

    digest = source_digest()
    out = build_dir()
    # Build from copies inside the build directory: ninja keys its rules by source path,
    # so two checkouts with the same sources would otherwise rebuild each other's module
    # over and over. The included files are copied too (bindings.cpp includes them).
    src_dir = out / "src"
    src_dir.mkdir(parents=True, exist_ok=True)
    _clear_stale_lock(out / "lock")
    for name in _SOURCES + _INCLUDED:
        data = (_HERE / name).read_bytes()
        copy = src_dir / name
        if not copy.exists() or copy.read_bytes() != data:
            write_atomically(copy, lambda out, data=data: out.write(data))
    return load(
        name=f"tokenmill_kernels_{digest}",
        sources=[str(src_dir / name) for name in _SOURCES],
        extra_cflags=list(_CFLAGS),
        build_directory=str(out),
        verbose=verbose,
    )


@functools.cache
def cpu_kernels():
    """The compiled kernel module, or None if it cannot be built here."""
    try:
        return build()
    except Exception as exc:  # noqa: BLE001 -- no compiler, or a failed build, must not stop serving
        log.warning("CPU kernels unavailable, using the PyTorch path: %s", exc)
        return None


def inference_kernels(*tensors: torch.Tensor):
    """The compiled kernels for a fused inference call on `tensors`, or None where the
    PyTorch path must run instead: the native calls have no autograd and no TorchScript
    or ONNX form, so a forward that trains (distillation, recovery fine-tuning) or is
    being traced for export takes the PyTorch path. Cheap on the engine's path, which
    runs with gradients off: two flag reads."""
    if torch.jit.is_tracing():
        return None
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return None
    return cpu_kernels()


# A probe shape per block type: odd row counts, a few input rows. 259 is Q4_1F.
_PROBE_TYPES = {2: 64, 3: 64, 6: 64, 8: 64, 12: 256, 14: 256, 259: 64}


def _probe_weight(qtype: int, k: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """Random block bytes with sane float16 scales (random bits could be NaN); Q4_1F's
    are a random Q4_1 weight's, repacked."""
    from tokenmill.model.quant.blocks import BLOCK_TYPES, Q4_1F, BlockWeight, repack_q4_1

    if qtype == Q4_1F:
        return repack_q4_1(BlockWeight(_probe_weight(3, k, n, gen), 3, k)).data
    elems, nbytes = BLOCK_TYPES[qtype]
    w = torch.randint(0, 256, (n, k // elems, nbytes), dtype=torch.uint8, generator=gen)
    halves = (torch.rand(n, k // elems, 2, generator=gen) * 0.01).half()
    halves = halves.view(torch.uint8).view(n, k // elems, 2, 2)
    if qtype == 14:  # Q6_K: its float16 scale ends the block
        w[..., -2:] = halves[..., 0, :]
    else:  # the others start with it; Q4_1 and Q4_K follow it with a float16 min
        w[..., 0:2] = halves[..., 0, :]
        if qtype in (3, 12):
            w[..., 2:4] = halves[..., 1, :]
    return w.reshape(n, -1).contiguous()


def agrees_with_scalar(kernels, variant: str) -> bool:
    """Whether `variant` computes what the portable kernels compute, on every type, for
    one and several input rows, every way (row by row, in tiles, and as serving
    chooses)."""
    gen = torch.Generator().manual_seed(0)
    for qtype, k in _PROBE_TYPES.items():
        w = _probe_weight(qtype, k, 19, gen)
        for m in (1, 6, 20):
            x = torch.randn(m, k, generator=gen)
            ref = kernels.quant_matmul(x, w, qtype, method="gemv", variant="scalar")
            # "" is what serving runs: gemv, tile or (where the variant has one) the
            # block GEMM, by M.
            for method in ("gemv", "tile", ""):
                got = kernels.quant_matmul(x, w, qtype, method=method, variant=variant)
                if not torch.allclose(got, ref, rtol=1e-4, atol=1e-4):
                    return False
        ids = torch.tensor([0, 18, 7])
        rows = kernels.quant_rows(w, qtype, k, ids, variant=variant)
        if not torch.allclose(
            rows, kernels.quant_rows(w, qtype, k, ids, variant="scalar"), rtol=1e-6, atol=1e-7
        ):
            return False
    return True


@functools.cache
def quant_isa() -> str:
    """The instruction set the block kernels use here: the fastest this CPU runs whose
    results agree with the portable kernels on a probe (a variant that disagrees is
    skipped with a warning rather than trusted). Selects it in the module."""
    kernels = cpu_kernels()
    if kernels is None:
        return "none"
    for variant in kernels.quant_variants():
        if variant == "scalar" or agrees_with_scalar(kernels, variant):
            kernels.select_quant_variant(variant)
            return variant
        log.warning("The %s block kernels disagree with the portable ones; skipped.", variant)
    return "scalar"


# The variant that is another's kernels plus a GEMM of its own above gemv_max_m rows.
_BATCH_DEPENDENT = {"amx": "avx512"}


def select_isa(batch_invariant: bool = False) -> str:
    """Makes the block kernels' default variant the fastest (quant_isa), or, when
    `batch_invariant`, the fastest whose result for a row is the same bits in a batch of
    any size: amx's tile-unit GEMM serves only batches above 8 rows, so it gives way to
    avx512. Mutates the module's process-wide default; returns the variant's name."""
    best = quant_isa()
    choice = _BATCH_DEPENDENT.get(best, best) if batch_invariant else best
    kernels = cpu_kernels()
    if kernels is not None:
        kernels.select_quant_variant(choice)
    return choice


# A build takes about a minute (several under load); torch's lock file outlives a build
# that was killed, and every later load would wait on it forever.
_STALE_LOCK_S = 20 * 60


def _clear_stale_lock(lock: Path) -> None:
    """Removes `lock` when it is older than any real build (mutates the build dir)."""
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return
    if age > _STALE_LOCK_S:
        log.warning("removing a stale kernel build lock (%.0f min old): %s", age / 60, lock)
        lock.unlink(missing_ok=True)
