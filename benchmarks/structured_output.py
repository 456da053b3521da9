"""Cost per generated token of grammar-constrained decoding against free decoding.

One process, the default model, the offline engine. Each variant generates exactly
`--tokens` tokens for each of `--batch` identical prompts: the free variant with
ignore_eos, the constrained one under a JSON schema that cannot end sooner (an array of at
least 1000 strings), so both do the same number of decode steps. Variants run
interleaved (free, constrained, free, ...) `--reps` times; the medians are printed and
written as JSON.

    nice -n 10 python benchmarks/structured_output.py --batch 1 32 --reps 5 \
        --out docs/structured_output.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

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


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_once(llm: LLM, batch: int, tokens: int, constrained: bool) -> float:
    """Seconds to generate `tokens` tokens for each of `batch` prompts."""
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
    start = time.perf_counter()
    outputs = llm.generate(prompts, [params] * batch)
    elapsed = time.perf_counter() - start
    produced = {len(o.outputs[0].token_ids) for o in outputs}
    assert produced == {tokens}, f"expected {tokens} tokens per prompt, got {produced}"
    return elapsed


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
        times: dict[str, list[float]] = {"free": [], "constrained": []}
        for _ in range(args.reps):
            for name in ("free", "constrained"):
                times[name].append(run_once(llm, batch, args.tokens, name == "constrained"))
        per_token = {
            k: 1000 * statistics.median(v) / (batch * args.tokens) for k, v in times.items()
        }
        row = {
            "batch": batch,
            "tokens_per_sequence": args.tokens,
            "reps": args.reps,
            "free_ms_per_token": round(per_token["free"], 3),
            "constrained_ms_per_token": round(per_token["constrained"], 3),
            "overhead_pct": round(100 * (per_token["constrained"] / per_token["free"] - 1), 1),
            "runs_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
        }
        results.append(row)
        print(json.dumps(row))
    report = {"cpu": cpu_name(), "threads": llm.engine.num_threads, "results": results}
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "results"}))


if __name__ == "__main__":
    main()
