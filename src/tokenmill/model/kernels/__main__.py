"""Build the native kernels now (what `make install` runs), so the first server start
does not wait for a compiler: `python -m tokenmill.model.kernels`.

Prints where the build is and which instruction sets run here. Exits 0 when no
compiler is available (tokenmill then serves on its PyTorch path) and says so.
"""

from __future__ import annotations

import sys
import time

from tokenmill.model.kernels import build, build_dir, quant_isa


def main() -> int:
    start = time.perf_counter()
    try:
        kernels = build()
    except Exception as exc:  # noqa: BLE001 -- report any build failure, never fail install
        print(
            f"tokenmill kernels: not built ({type(exc).__name__}: {exc}).\n"
            "tokenmill will run on its PyTorch path (dequantized float32 weights, slower). "
            "Install a C++ compiler (g++) and rerun `make install` for the fast path.",
            file=sys.stderr,
        )
        return 0
    elapsed = time.perf_counter() - start
    print(
        f"tokenmill kernels: ready in {elapsed:.1f} s at {build_dir()}; instruction sets "
        f"{', '.join(kernels.quant_variants())}, using {quant_isa()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
