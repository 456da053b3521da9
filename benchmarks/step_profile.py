"""Where a decode step's time goes: scheduling, input preparation, the model's kernels,
the other operators and Python, sampling, and detokenization.

Runs the engine on B requests (random `--prompt-len`-token prompts, greedy, EOS
ignored) until all are decoding, then times `--steps` decode steps with each stage of
`EngineCore.step` wrapped by a timer, and profiles a few more with torch.profiler to
split the model's time into named operators. Times are the calling thread's CPU time
(a busy machine disturbs them less than wall time; the step runs on this one thread).

    .venv/bin/python benchmarks/step_profile.py [--batch 1,32] [--dtype auto] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch

from tokenmill import LLM, SamplingParams
from tokenmill.engine.request import GenerationRequest
from tokenmill.model.kernels import cpu_kernels
from tokenmill.model.layers.decode_stack import DecodeStack

# The heavy arithmetic: the native kernels (recorded under "native::" by this script)
# and ATen's matmuls and attention. Everything else in a step is overhead.
KERNEL_OPS = (
    "native::",
    "aten::mm",
    "aten::addmm",
    "aten::_int_mm",
    "aten::bmm",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
)
NATIVE_FUNCTIONS = (
    "quant_matmul",
    "quant_matmul_out",
    "quant_rows",
    "decode_attention",
    "prefill_attention",
    "int8_linear",
    # Every Llama layer of a decode-only step in one call: the kernels above, called from
    # C++ (its glue, a few tensor allocations per layer, is counted with them; compare
    # with --no-stack for the layer-by-layer split).
    "llama_decode_stack",
)


def record_native_calls(kernels) -> None:
    """Make each native kernel call a named range in torch.profiler's trace."""
    for name in NATIVE_FUNCTIONS:
        fn = getattr(kernels, name, None)
        if fn is None:
            continue

        def recorded(*args, _fn=fn, _name=name, **kwargs):
            with torch.profiler.record_function(f"native::{_name}"):
                return _fn(*args, **kwargs)

        setattr(kernels, name, recorded)


class StageTimer:
    """Wraps callables so that each call adds its thread CPU time to a named stage."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)

    def wrap(self, obj, attr: str, stage: str) -> None:
        fn = getattr(obj, attr)

        def timed(*args, **kwargs):
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.totals[stage] += time.thread_time() - start

        setattr(obj, attr, timed)


def profile(args, batch: int) -> dict:
    llm = LLM(
        dtype=args.dtype,
        quantization=args.quantization,
        num_threads=args.threads,
        kv_cache_memory_gib=args.kv_cache_gib,
        max_num_seqs=max(batch, 1),
        max_num_batched_tokens=max(512, batch * args.prompt_len),
        enable_prefix_caching=False,
    )
    engine = llm.engine
    rng = random.Random(0)
    params = SamplingParams(temperature=0, max_tokens=args.steps * 3 + 64, ignore_eos=True)
    for i in range(batch):
        ids = [rng.randrange(17, 49152) for _ in range(args.prompt_len)]
        engine.add_request(GenerationRequest(f"r{i}", params, ids))
    while any(r.num_computed_tokens < r.num_prompt_tokens for r in engine.scheduler.running) or (
        engine.scheduler.num_waiting
    ):
        engine.step()
    for _ in range(3):  # warm
        engine.step()

    timer = StageTimer()
    runner = engine.runner
    timer.wrap(engine.scheduler, "schedule", "schedule")
    timer.wrap(runner.model, "forward", "model forward")
    timer.wrap(runner.model, "compute_logits", "output head")
    timer.wrap(runner, "execute", "execute (all)")
    timer.wrap(engine.sampler, "sample", "sampling")
    timer.wrap(engine.outputs, "append_token", "detokenize + stop checks")
    timer.wrap(engine.outputs, "collect", "collect outputs")
    kernels = cpu_kernels()
    if kernels is not None:
        for name in NATIVE_FUNCTIONS:
            if hasattr(kernels, name):
                timer.wrap(kernels, name, f"  native {name}")
        for name in ("rms_norm", "silu_mul", "rope_write_kv"):  # fused small operators
            timer.wrap(kernels, name, f"fused {name}")
    # The ATen paths' heavy arithmetic (looked up at call time by nn.Linear and attention).
    timer.wrap(torch.nn.functional, "linear", "  aten linear")
    timer.wrap(torch.nn.functional, "scaled_dot_product_attention", "  aten sdpa")
    steps = []
    for _ in range(args.steps):
        start = time.thread_time()
        engine.step()
        steps.append(time.thread_time() - start)
    n = args.steps
    stages = {k: v / n * 1e3 for k, v in timer.totals.items()}
    stages["input preparation"] = (
        stages.pop("execute (all)") - stages["model forward"] - stages["output head"]
    )
    step_ms = statistics.median(steps) * 1e3
    stages["step (median)"] = step_ms

    if cpu_kernels() is not None:
        record_native_calls(cpu_kernels())
    acts = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(args.profile_steps):
            engine.step()
    ops = defaultdict(lambda: [0.0, 0])
    for e in prof.key_averages():
        ops[e.key][0] += e.self_cpu_time_total / args.profile_steps / 1e3
        ops[e.key][1] += e.count // args.profile_steps
    top = sorted(ops.items(), key=lambda kv: -kv[1][0])[: args.top]
    kernel_ms = sum(v for k, v in stages.items() if k.startswith("  "))
    num_ops = sum(v[1] for v in ops.values())
    return {
        "batch": batch,
        "kernel_path": engine.loaded.kernel_path,
        "stages_ms": stages,
        "kernel_ms": kernel_ms,
        "ops_per_step": num_ops,
        "top_ops": [{"op": k, "ms": v[0], "calls": v[1]} for k, v in top],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=lambda s: [int(x) for x in s.split(",")], default=[1, 32])
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--quantization", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompt-len", type=int, default=100)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--profile-steps", type=int, default=5)
    ap.add_argument("--kv-cache-gib", type=float, default=0.5)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    ap.add_argument(
        "--no-stack",
        action="store_true",
        help="run the decoder layer by layer from Python (no llama_decode_stack)",
    )
    args = ap.parse_args()
    if args.no_stack:
        DecodeStack.__call__ = lambda self, *a, **k: None
    results = []
    for b in args.batch:
        r = profile(args, b)
        results.append(r)
        print(f"\nbatch {b}, {r['kernel_path']}, {r['ops_per_step']} profiled ops per step")
        for k, v in r["stages_ms"].items():
            print(f"  {k:28s} {v:8.2f} ms")
        step = r["stages_ms"]["step (median)"]
        print(f"  {'kernels (sum of the above)':28s} {r['kernel_ms']:8.2f} ms")
        print(f"  {'non-kernel':28s} {step - r['kernel_ms']:8.2f} ms")
        for o in r["top_ops"]:
            print(f"    {o['op'][:50]:50s} {o['ms']:8.3f} ms  x{o['calls']}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
