"""Speed-up of prompt-lookup speculation at batch 1, and its cost where nothing repeats.

One process, the default model, three offline engines with the same settings but
`speculative` off, ngram, and ngram with auto-off disabled. Each workload is one greedy
chat request; the engines run it interleaved (off, ngram, ngram without auto-off, off,
...) `--reps` times, and the medians of the generation rate (output tokens / wall seconds
of the whole request, prefill included) and of tokens per process CPU second (steadier
on a shared machine) are printed and written as JSON, with the
acceptance rate and tokens per step of the ngram engine and a check that every engine
produced the same tokens.

    taskset -c 1 nice -n 10 python benchmarks/speculative.py --reps 5 \
        --out benchmarks/results/speculative.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from tokenmill.bench.cpu import detect
from tokenmill.engine.llm import LLM
from tokenmill.sampling_params import SamplingParams

PARAGRAPH = (
    "The paged KV cache stores keys and values in fixed-size blocks, so that sequences of "
    "different lengths can share one pool of memory without fragmentation. Each block holds "
    "sixteen tokens, and a block table maps a sequence's positions to its blocks. When two "
    "requests begin with the same system prompt, their first blocks are shared, and the "
    "prefix cache finds them again by a chained hash of the tokens they hold."
)
CODE = """def summarize(records, key):
    totals = {}
    for record in records:
        value = record.get(key)
        if value is None:
            continue
        totals[value] = totals.get(value, 0) + record["amount"]
    ordered = sorted(totals.items(), key=lambda item: item[1], reverse=True)
    return [name for name, amount in ordered]
"""
WORKLOADS = {
    "copy: repeat a paragraph": "Repeat the following text exactly:\n\n" + PARAGRAPH,
    "code: rename a variable": "Rename the variable `totals` to `sums` in this function "
    "and show the whole function:\n\n" + CODE,
    "nothing to copy: free writing": "Write a short story about a lighthouse keeper who "
    "finds a message in a bottle.",
}


def run_once(llm: LLM, prompt: str, max_tokens: int) -> dict:
    before = llm.stats()
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    start, cpu_start = time.perf_counter(), time.process_time()
    out = llm.chat([{"role": "user", "content": prompt}], params)[0].outputs[0]
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    after = llm.stats()
    drafts = after.spec_draft_tokens - before.spec_draft_tokens
    accepted = after.spec_accepted_tokens - before.spec_accepted_tokens
    steps = after.sequence_steps - before.sequence_steps
    return {
        "tokens": out.token_ids,
        "wall_s": wall,
        "tok_s": len(out.token_ids) / wall,
        "tok_cpu_s": len(out.token_ids) / cpu,
        "acceptance": accepted / drafts if drafts else None,
        "tokens_per_step": len(out.token_ids) / steps if steps else None,
    }


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def print_table(results: list[dict], mode: str, extra_head: str = "", extra=None) -> None:
    """The Markdown table of a run: each workload with speculation off and in `mode`
    ("ngram" or "draft"), and an optional extra column."""
    head = ["workload", "tokens", "off tok/s", f"{mode} tok/s", "speed-up", "acceptance",
            "tok/step"] + ([extra_head] if extra_head else [])  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in results:
        cells = [r["workload"], r["output_tokens"], r["off_tok_s"], r[f"{mode}_tok_s"],
                 f"{r['speedup']}x", _pct(r["acceptance"]),
                 "n/a" if r["tokens_per_step"] is None else f"{r['tokens_per_step']:.2f}"]  # fmt: skip
        if extra is not None:
            cells.append(extra(r))
        print("| " + " | ".join(str(c) for c in cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--k", type=int, default=4, help="--num-speculative-tokens")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--only", default=None, help="run only the workloads whose name contains this")
    args = ap.parse_args()

    common = {"kv_cache_memory_gib": 0.25, "max_model_len": 2048}
    engines = {
        "off": LLM(**common),
        "ngram": LLM(speculative="ngram", num_speculative_tokens=args.k, **common),
        "ngram, no auto-off": LLM(
            speculative="ngram",
            num_speculative_tokens=args.k,
            speculative_min_acceptance=0.0,
            **common,
        ),
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
        same = all(r["tokens"] == runs["off"][0]["tokens"] for rs in runs.values() for r in rs)
        off = statistics.median(r["tok_s"] for r in runs["off"])
        on = statistics.median(r["tok_s"] for r in runs["ngram"])
        always = statistics.median(r["tok_s"] for r in runs["ngram, no auto-off"])
        row = {
            "workload": name,
            "output_tokens": len(runs["off"][0]["tokens"]),
            "off_tok_s": round(off, 1),
            "ngram_tok_s": round(on, 1),
            "speedup": round(on / off, 2),
            "cpu_speedup": round(
                statistics.median(r["tok_cpu_s"] for r in runs["ngram"])
                / statistics.median(r["tok_cpu_s"] for r in runs["off"]),
                2,
            ),
            "no_auto_off_cpu_speedup": round(
                statistics.median(r["tok_cpu_s"] for r in runs["ngram, no auto-off"])
                / statistics.median(r["tok_cpu_s"] for r in runs["off"]),
                2,
            ),
            "no_auto_off_tok_s": round(always, 1),
            "no_auto_off_speedup": round(always / off, 2),
            "no_auto_off_acceptance": runs["ngram, no auto-off"][0]["acceptance"],
            "acceptance": runs["ngram"][0]["acceptance"],
            "tokens_per_step": runs["ngram"][0]["tokens_per_step"],
            "identical_output": same,
        }
        results.append(row)
        print(json.dumps(row))
    report = {
        "cpu": cpu.model,
        "cpus": list(cpu.cpus),
        "reps": args.reps,
        "k": args.k,
        "max_tokens": args.max_tokens,
        "results": results,
    }
    print(f"\nCPU: {cpu.model}, cpus {list(cpu.cpus)}, k={args.k}, medians of {args.reps}")
    print_table(
        results,
        "ngram",
        "no auto-off: tok/s, speed-up, acceptance",
        lambda r: (
            f"{r['no_auto_off_tok_s']}, {r['no_auto_off_speedup']}x, "
            f"{_pct(r['no_auto_off_acceptance'])}"
        ),
    )
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
