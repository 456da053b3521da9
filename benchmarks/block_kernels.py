"""Block-kernel timings on the default model's shapes, beside float32 ATen matmuls.

For each projection of SmolLM2-135M (Q4_1 layers, held as the Q4_1F blocks the loader
makes of them; Q8_0 tied head) and each batch M:
the block kernels by row (gemv), by tile (dequantize a tile to float32, blocked FMA
kernel) and, on a CPU with AMX, the block GEMM on the tile unit; and float32
`torch.nn.functional.linear` on the dequantized weights (what
`--dtype float32` runs). Variants run interleaved, one thread, and each figure is the
median over repeats of the calling thread's CPU time, which a busy machine disturbs far
less than wall time. Prints a table; writes JSON.

    .venv/bin/python benchmarks/block_kernels.py [--ms 1,8,32,64,512] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from gguf import GGMLQuantizationType as T

from tokenmill.model.kernels import _probe_weight, cpu_kernels, quant_isa
from tokenmill.model.quant.blocks import Q4_1F, type_name

SHAPES = {  # name: (N, K, type)
    "qkv": (960, 576, Q4_1F),
    "o": (576, 576, Q4_1F),
    "gate_up": (3072, 576, Q4_1F),
    "down": (576, 1536, Q4_1F),
    "head": (49152, 576, T.Q8_0),
}


def cpu_time(fn, inner: int) -> float:
    start = time.thread_time()
    for _ in range(inner):
        fn()
    return (time.thread_time() - start) / inner


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--ms", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32, 64, 512]
    )
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--shapes", type=lambda s: s.split(","), default=list(SHAPES))
    ap.add_argument("--out", default="docs/block_kernels.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    k = cpu_kernels()
    isa = quant_isa()
    gen = torch.Generator().manual_seed(0)
    rows = []
    for name in args.shapes:
        n, kdim, qtype = SHAPES[name]
        w = _probe_weight(int(qtype), kdim, n, gen)
        wf = k.quant_rows(w, int(qtype), kdim, torch.arange(n))  # float32 (N, K)
        for m in args.ms:
            x = torch.randn(m, kdim, generator=gen)
            inner = max(1, int(2e7 / (m * n * kdim)))
            t = int(qtype)
            variants = {
                "gemv": lambda x=x, w=w, t=t: k.quant_matmul(x, w, t, method="gemv"),
                "tile": lambda x=x, w=w, t=t: k.quant_matmul(x, w, t, method="tile"),
                "auto": lambda x=x, w=w, t=t: k.quant_matmul(x, w, t),
                "f32 aten": lambda x=x, wf=wf: F.linear(x, wf),
            }
            if k.quant_blocks_takes(t):  # the block GEMM (AMX), where this CPU has one
                variants["blocks"] = lambda x=x, w=w, t=t: k.quant_matmul(x, w, t, method="blocks")
            times: dict[str, list[float]] = {v: [] for v in variants}
            for fn in variants.values():
                fn()
            for _ in range(args.repeats):
                for v, fn in variants.items():
                    times[v].append(cpu_time(fn, inner))
            med = {v: statistics.median(t) * 1e6 for v, t in times.items()}
            row = {"shape": name, "N": n, "K": kdim, "type": type_name(qtype), "M": m}
            rows.append({**row, "us": med})
            cells = "  ".join(f"{v} {us:9.1f}" for v, us in med.items())
            print(f"{name:8s} M={m:4d}  {cells}  (us)", flush=True)
    info = {
        "isa": isa,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": 1,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    main()
