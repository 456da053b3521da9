"""Where a prefill's time goes: the block kernels' GEMMs, attention, and the rest.

Runs the engine on one random `--prompt-len`-token prompt at a time (prefix caching
off, one output token), `--repeats` times, and splits the steps' thread CPU time into
the native kernels, ATen's attention and matmuls, and everything else. Prints the
prefill rate (prompt tokens per second of step time) with the split.

    .venv/bin/python benchmarks/prefill_profile.py [--prompt-len 512] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

import torch
from step_profile import NATIVE_FUNCTIONS, StageTimer

from tokenmill import LLM, SamplingParams
from tokenmill.engine.request import GenerationRequest
from tokenmill.model.kernels import cpu_kernels, quant_isa


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()

    llm = LLM(
        dtype=args.dtype,
        num_threads=args.threads,
        # Room for the prompt: 0.25 GiB holds SmolLM2's 2048 positions in float32.
        kv_cache_memory_gib=0.25 * max(1, -(-(args.prompt_len + 16) // 2048)),
        max_model_len=max(2048, args.prompt_len + 16),
        max_num_seqs=1,
        enable_prefix_caching=False,
    )
    engine = llm.engine
    timer = StageTimer()
    kernels = cpu_kernels()
    if kernels is not None:
        for name in NATIVE_FUNCTIONS:
            if hasattr(kernels, name):
                timer.wrap(kernels, name, f"native {name}")
        for name in ("rms_norm", "silu_mul", "rope_write_kv"):
            timer.wrap(kernels, name, f"fused {name}")
    timer.wrap(torch.nn.functional, "linear", "aten linear")
    timer.wrap(torch.nn.functional, "scaled_dot_product_attention", "aten sdpa")
    rng = random.Random(0)
    params = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)
    totals = []
    for i in range(args.repeats + 1):  # the first is a warm-up
        timer.totals.clear()
        ids = [rng.randrange(17, 49152) for _ in range(args.prompt_len)]
        engine.add_request(GenerationRequest(f"p{i}", params, ids))
        spent = 0.0
        while engine.has_unfinished():
            start = time.thread_time()
            engine.step()
            spent += time.thread_time() - start
        if i:
            totals.append((spent, dict(timer.totals)))
    spent = statistics.median(t for t, _ in totals)
    stages = {k: statistics.median(s.get(k, 0.0) for _, s in totals) * 1e3 for k in totals[0][1]}
    stages["other (Python, small operators)"] = spent * 1e3 - sum(stages.values())
    result = {
        "cpu": platform.processor() or platform.machine(),
        "isa": quant_isa(),
        "prompt_len": args.prompt_len,
        "threads": args.threads,
        "prefill_ms": spent * 1e3,
        "prefill_tok_s": args.prompt_len / spent,
        "stages_ms": stages,
    }
    print(
        f"prefill of {args.prompt_len} tokens, {args.threads} thread(s), {quant_isa()}: "
        f"{spent * 1e3:.1f} ms, {args.prompt_len / spent:.1f} tok/s"
    )
    for k, v in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"  {k:34s} {v:8.1f} ms")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
