"""Cost per generated token of grammar-constrained decoding against free decoding.

One process, the default model, the offline engine. Each variant generates exactly
`--tokens` tokens for each of `--batch` identical prompts: the free variant with
ignore_eos, the constrained one under a JSON schema that cannot end sooner (an array of at
least 1000 strings), so both do the same number of decode steps. Variants run
interleaved (free, constrained, free, ...) `--reps` times; the medians are printed and
written as JSON. Each run records wall time and process CPU time (the CPU figure is
steadier on a shared machine), and, for constrained runs, the CPU time spent in the
grammar path itself (filling and applying the token bitmask, advancing the matcher).

    nice -n 10 python benchmarks/structured_output.py --batch 1 32 --reps 5 \
        --out docs/structured_output.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from tokenmill.bench.cpu import detect
from tokenmill.engine import grammar, sampler
from tokenmill.engine.llm import LLM
from tokenmill.sampling_params import SamplingParams, StructuredSpec

SCHEMA = {
    "type": "array",
    "minItems": 1000,
    "items": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "n": {"type": "integer", "minimum": 0}},
        "required": ["name", "n"],
    },
}


class GrammarClock:
    """Accumulates the thread CPU time of the grammar path by wrapping its two entry
    points (the sampler's bitmask stage and the matcher's accept)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        apply_constraints = sampler._apply_constraints
        accept = grammar.TokenConstraint.accept

        def timed_apply(logits, rows):
            start = time.thread_time()
            apply_constraints(logits, rows)
            self.seconds += time.thread_time() - start

        def timed_accept(constraint, token_id):
            start = time.thread_time()
            accept(constraint, token_id)
            self.seconds += time.thread_time() - start

        sampler._apply_constraints = timed_apply
        grammar.TokenConstraint.accept = timed_accept


CLOCK = GrammarClock()


def run_once(llm: LLM, batch: int, tokens: int, constrained: bool) -> tuple[float, float, float]:
    """(wall s, process CPU s, grammar-path CPU s) to generate `tokens` tokens for each
    of `batch` prompts."""
    if constrained:
        params = SamplingParams(
            max_tokens=tokens,
            temperature=1.0,
            seed=0,
            structured=StructuredSpec("json_schema", json.dumps(SCHEMA)),
        )
    else:
        params = SamplingParams(max_tokens=tokens, temperature=1.0, seed=0, ignore_eos=True)
    prompts = [f"List {i} things as JSON." for i in range(batch)]
    start, cpu, grammar_cpu = time.perf_counter(), time.process_time(), CLOCK.seconds
    outputs = llm.generate(prompts, [params] * batch)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    produced = {len(o.outputs[0].token_ids) for o in outputs}
    assert produced == {tokens}, f"expected {tokens} tokens per prompt, got {produced}"
    return elapsed, cpu, CLOCK.seconds - grammar_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    llm = LLM(max_num_seqs=max(args.batch))
    results = []
    for batch in args.batch:
        run_once(llm, batch, 8, False)  # warm-up; compiles the grammar for the next one
        run_once(llm, batch, 8, True)
        runs: dict[str, list[tuple[float, float, float]]] = {"free": [], "constrained": []}
        for _ in range(args.reps):
            for name in ("free", "constrained"):
                runs[name].append(run_once(llm, batch, args.tokens, name == "constrained"))
        n_tokens = batch * args.tokens

        def per_token(name: str, field: int, runs=runs, n_tokens=n_tokens) -> float:
            return 1000 * statistics.median(r[field] for r in runs[name]) / n_tokens

        wall = {k: per_token(k, 0) for k in runs}
        cpu = {k: per_token(k, 1) for k in runs}
        row = {
            "batch": batch,
            "tokens_per_sequence": args.tokens,
            "reps": args.reps,
            "free_wall_ms_per_token": round(wall["free"], 3),
            "constrained_wall_ms_per_token": round(wall["constrained"], 3),
            "wall_overhead_pct": round(100 * (wall["constrained"] / wall["free"] - 1), 1),
            "free_cpu_ms_per_token": round(cpu["free"], 3),
            "constrained_cpu_ms_per_token": round(cpu["constrained"], 3),
            "cpu_overhead_pct": round(100 * (cpu["constrained"] / cpu["free"] - 1), 1),
            "grammar_path_cpu_ms_per_token": round(per_token("constrained", 2), 3),
            "runs": {k: [[round(x, 3) for x in r] for r in v] for k, v in runs.items()},
        }
        results.append(row)
        print(json.dumps(row))
    report = {"cpu": detect().model, "threads": llm.engine.num_threads, "results": results}
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "results"}))


if __name__ == "__main__":
    main()
