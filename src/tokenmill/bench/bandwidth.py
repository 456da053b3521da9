"""Memory read bandwidth as the peers see it: the ceiling of batch-1 decode.

Measured, not assumed: a subprocess pinned to a plan's peer CPUs, with the plan's thread
count, sums a float32 tensor far larger than the caches a few times; the best pass gives
the read bandwidth. One thread on one core reads less than all cores together, so each
plan has its own figure.

Run as `python -m tokenmill.bench.bandwidth THREADS [MIB]`: prints one JSON object.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from tokenmill.bench.pinning import pinned_argv

DEFAULT_MIB = 1024
PASSES = 7


def read_bandwidth_gbs(threads: int, mib: int = DEFAULT_MIB, passes: int = PASSES) -> float:
    """GB/s of the fastest of `passes` full reads of a `mib` MiB float32 tensor."""
    import torch

    torch.set_num_threads(threads)
    x = torch.ones(mib * 2**20 // 4, dtype=torch.float32)
    x.sum()  # fault the pages in before timing
    best = float("inf")
    for _ in range(passes):
        t0 = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t0)
    return x.nbytes / best / 1e9


def main(argv: list[str] | None = None) -> int:
    """Print {"gbs", "threads", "mib"} for THREADS [MIB]."""
    args = sys.argv[1:] if argv is None else argv
    threads = int(args[0])
    mib = int(args[1]) if len(args) > 1 else DEFAULT_MIB
    print(json.dumps({"gbs": read_bandwidth_gbs(threads, mib), "threads": threads, "mib": mib}))
    return 0


def measure_bandwidth(
    cpus: tuple[int, ...], threads: int, mib: int = DEFAULT_MIB, timeout_s: float = 300.0
) -> float:
    """Run the probe pinned to `cpus`; raises RuntimeError when it fails."""
    argv, preexec = pinned_argv(
        [sys.executable, "-m", "tokenmill.bench.bandwidth", str(threads), str(mib)], cpus
    )
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        preexec_fn=preexec,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bandwidth probe failed ({done.returncode}): {done.stderr[-800:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["gbs"])


if __name__ == "__main__":
    sys.exit(main())
