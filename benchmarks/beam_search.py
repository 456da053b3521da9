"""Throughput cost of beam search against greedy decoding, batch 1, one prompt.

One process, the default model, the offline engine (LLM). Greedy generates exactly
`--tokens` tokens (ignore_eos); beam search of width `--width` runs with the same
max_tokens and returns its best beam. Both are timed interleaved (greedy, beam, greedy,
...) `--reps` times; the medians are printed and written as JSON. Tokens/s counts the
returned tokens (for beam search, the best beam's), so it is what a client sees; the
engine steps and the tokens computed for all beams are reported beside it.

    taskset -c 1 nice -n 10 python benchmarks/beam_search.py --width 4 --tokens 64 \
        --reps 5 --out docs/beam_search.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from tokenmill.bench.cpu import detect
from tokenmill.engine.llm import LLM
from tokenmill.sampling_params import BeamSpec, SamplingParams

PROMPT = "Write a long story about a lighthouse keeper who finds a map."


def run_once(llm: LLM, params: SamplingParams) -> dict:
    before = llm.engine.stats()
    start = time.perf_counter()
    (out,) = llm.generate(PROMPT, params)
    wall = time.perf_counter() - start
    after = llm.engine.stats()
    tokens = len(out.outputs[0].token_ids)
    return {
        "wall_s": wall,
        "tokens": tokens,
        "tok_per_s": tokens / wall,
        "steps": after.num_steps - before.num_steps,
        "computed_tokens": after.generation_tokens - before.generation_tokens,
        "ms_per_step": 1000 * wall / (after.num_steps - before.num_steps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    llm = LLM()
    variants = {
        "greedy": SamplingParams(temperature=0.0, max_tokens=args.tokens, ignore_eos=True),
        f"beam{args.width}": SamplingParams(
            temperature=0.0, max_tokens=args.tokens, beam=BeamSpec(args.width)
        ),
    }
    for params in variants.values():
        run_once(llm, params)  # warm-up: kernels, allocator
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for _ in range(args.reps):
        for name, params in variants.items():
            runs[name].append(run_once(llm, params))
    results = {}
    for name, rs in runs.items():
        results[name] = {
            key: statistics.median(r[key] for r in rs)
            for key in ("tok_per_s", "ms_per_step", "wall_s", "tokens", "steps", "computed_tokens")
        }
        print(name, {k: round(v, 2) for k, v in results[name].items()}, flush=True)
    greedy, beam = results["greedy"], results[f"beam{args.width}"]
    ratio = beam["tok_per_s"] / greedy["tok_per_s"]
    step_ratio = beam["ms_per_step"] / greedy["ms_per_step"]
    print(f"beam{args.width} / greedy: tokens/s {ratio:.2f}x, time per step {step_ratio:.2f}x")
    report = {
        "cpu": detect().model,
        "threads": llm.engine.num_threads,
        "precision": llm.engine.precision.describe(),
        "width": args.width,
        "max_tokens": args.tokens,
        "reps": args.reps,
        "results": results,
        "runs": runs,
    }
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
