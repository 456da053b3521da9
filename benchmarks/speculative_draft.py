"""Speed-up of draft-model speculation at batch 1 (`--speculative draft:MODEL`).

One process, two offline engines with the same target settings: speculation off, and a
draft model proposing `--k` tokens greedily. The pairing measured by default is the
packaged SmolLM2 in float32 as the target (slow: dequantized weights) with the same model
in its packaged Q4_1 blocks as the draft (the fast path, the same vocabulary). Each
workload (the copy-heavy and the nothing-to-copy requests of benchmarks/speculative.py)
is one greedy chat request, run interleaved (off, draft, off, ...) `--reps` times; the
medians of output tokens per wall second and per process CPU second are printed and
written as JSON, with the acceptance rate, tokens per verify step, the per-token cost of
each model alone, and a check that both engines produced the same tokens.

    taskset -c 1 nice -n 10 python benchmarks/speculative_draft.py --reps 3 \
        --out benchmarks/results/speculative_draft.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from speculative import WORKLOADS, print_table, run_once

from tokenmill.bench.cpu import detect
from tokenmill.engine.llm import LLM


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--k", type=int, default=4, help="--num-speculative-tokens")
    ap.add_argument("--target", default=None, help="--model of the target (default packaged)")
    ap.add_argument("--target-dtype", default="float32")
    ap.add_argument("--draft", default="smollm2-135m-instruct", help="MODEL of draft:MODEL")
    ap.add_argument("--only", default=None, help="run only the workloads whose name contains this")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    common = {"kv_cache_memory_gib": 0.25, "max_model_len": 2048, "dtype": args.target_dtype}
    engines = {
        "off": LLM(args.target, **common),
        "draft": LLM(
            args.target,
            speculative=f"draft:{args.draft}",
            num_speculative_tokens=args.k,
            speculative_min_acceptance=0.0,
            **common,
        ),
        # The draft alone, as a target: what one of its tokens costs.
        "draft model alone": LLM(args.draft, kv_cache_memory_gib=0.25, max_model_len=2048),
    }
    cpu = detect()
    results = []
    for name, prompt in WORKLOADS.items():
        if args.only and args.only not in name:
            continue
        runs: dict[str, list[dict]] = {mode: [] for mode in engines}
        for _ in range(args.reps):
            for mode, llm in engines.items():
                runs[mode].append(run_once(llm, prompt, args.max_tokens))

        def med(mode: str, key: str, runs=runs) -> float:
            return statistics.median(r[key] for r in runs[mode])

        row = {
            "workload": name,
            "output_tokens": len(runs["off"][0]["tokens"]),
            "off_tok_s": round(med("off", "tok_s"), 1),
            "draft_tok_s": round(med("draft", "tok_s"), 1),
            "speedup": round(med("draft", "tok_s") / med("off", "tok_s"), 2),
            "cpu_speedup": round(med("draft", "tok_cpu_s") / med("off", "tok_cpu_s"), 2),
            "draft_model_alone_tok_s": round(med("draft model alone", "tok_s"), 1),
            "acceptance": runs["draft"][0]["acceptance"],
            "tokens_per_step": runs["draft"][0]["tokens_per_step"],
            "identical_output": all(r["tokens"] == runs["off"][0]["tokens"] for r in runs["draft"]),
        }
        results.append(row)
        print(json.dumps(row), flush=True)
    report = {
        "cpu": cpu.model,
        "cpus": list(cpu.cpus),
        "load_average": os.getloadavg(),
        "target": args.target or "packaged",
        "target_dtype": args.target_dtype,
        "draft": args.draft,
        "reps": args.reps,
        "k": args.k,
        "max_tokens": args.max_tokens,
        "results": results,
    }
    print(
        f"\nCPU: {cpu.model}, cpus {list(cpu.cpus)}, load {os.getloadavg()}, k={args.k}, "
        f"target {report['target']} {args.target_dtype}, draft {args.draft}, "
        f"medians of {args.reps}"
    )
    print_table(results, "draft")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
