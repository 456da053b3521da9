"""Native CPU kernels, compiled on first use with torch's C++ extension tools.

Each loader returns None when the kernel cannot be built here (no compiler, a
non-x86 CPU): callers keep a pure-PyTorch path for that case, so nothing depends on
a compiler being present, only speed does.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path

log = logging.getLogger(__name__)
_HERE = Path(__file__).parent
# Attention sums tolerate reassociation; fast-math lets GCC vectorise exp and the
# dot-product reductions.
_CFLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-ffast-math")


_SOURCES = ("bindings.cpp", "paged_attention.cpp", "int8_linear.cpp")


@functools.cache
def cpu_kernels():
    """The compiled kernel module (`decode_attention`, `int8_linear`), or None if it
    cannot be built here. Built once per source version into ~/.cache/tokenmill."""
    sources = [_HERE / name for name in _SOURCES]
    # The layout tag changes whenever the build recipe does, so no build directory is
    # shared by two recipes (ninja would rebuild back and forth between them).
    blob = b"".join(p.read_bytes() for p in sources) + str(_CFLAGS).encode() + b"copies-v1"
    digest = hashlib.sha256(blob).hexdigest()[:12]
    try:
        from torch.utils.cpp_extension import load

        build_dir = Path.home() / ".cache" / "tokenmill" / f"kernels-{digest}"
        # Build from copies inside the build directory: ninja keys its rules by source
        # path, so two checkouts with the same sources would otherwise rebuild each
        # other's module over and over.
        src_dir = build_dir / "src"
        src_dir.mkdir(parents=True, exist_ok=True)
        copies = []
        for p in sources:
            copy = src_dir / p.name
            if not copy.exists() or copy.read_bytes() != p.read_bytes():
                tmp = copy.with_suffix(".tmp")
                tmp.write_bytes(p.read_bytes())
                tmp.replace(copy)
            copies.append(copy)
        return load(
            name=f"tokenmill_kernels_{digest}",
            sources=[str(p) for p in copies],
            extra_cflags=list(_CFLAGS),
            build_directory=str(build_dir),
            verbose=False,
        )
    except Exception as exc:  # noqa: BLE001 - a missing compiler must not stop serving
        log.warning("CPU kernels unavailable, using the PyTorch path: %s", exc)
        return None
