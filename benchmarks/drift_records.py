"""Answers the drift benchmark's prompt sets with the default model, as a server would,
and writes one drift record per prompt (prompt, output, output tokens, finish reason,
mean token logprob) to benchmarks/data/drift/records/<set>.jsonl.

The calibration benchmark reads these files, so it needs no model run of its own;
rerun this after changing the prompt sets or the model.

    .venv/bin/python benchmarks/drift_records.py [--sets english,french,code,long]
        [--max-tokens 64] [--temperature 0.7] [--quantization int8|none] [--pure-pytorch]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import drift_prompts

from tokenmill import LLM, SamplingParams

OUT = drift_prompts.DATA / "records"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default=",".join(drift_prompts.SETS))
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--quantization", default="int8", help="'none' for float32")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--pure-pytorch",
        action="store_true",
        help="skip the native CPU kernels (the same arithmetic in ATen ops), e.g. where "
        "their shared build directory is locked by a build that died",
    )
    args = parser.parse_args()
    if args.pure_pytorch:
        from tokenmill.model.layers import attention
        from tokenmill.model.quant import int8

        attention.cpu_kernels = int8.cpu_kernels = lambda: None

    quant = None if args.quantization == "none" else args.quantization
    llm = LLM(dtype="float32", quantization=quant, max_num_seqs=64, max_num_batched_tokens=2048)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.sets.split(","):
        prompts = drift_prompts.load(name)
        params = [
            SamplingParams(
                max_tokens=args.max_tokens,
                temperature=args.temperature,
                top_p=args.top_p,
                seed=i,
                logprobs=0,
            )
            for i in range(len(prompts))
        ]
        start = time.perf_counter()
        path = args.out / f"{name}.jsonl"
        path.write_text("", encoding="utf-8")
        # In chunks, appended as they finish: progress shows, and a run cut short on a
        # busy machine still leaves usable records.
        for i in range(0, len(prompts), 64):
            chats = [[{"role": "user", "content": p}] for p in prompts[i : i + 64]]
            outputs = llm.chat(chats, params[i : i + 64])
            with path.open("a", encoding="utf-8") as f:
                for prompt, out in zip(prompts[i : i + 64], outputs, strict=True):
                    f.write(json.dumps(record(prompt, out), ensure_ascii=False) + "\n")
            print(f"{name}: {i + len(outputs)}/{len(prompts)}", flush=True)
        print(f"{name}: {len(prompts)} records in {time.perf_counter() - start:.0f} s")


def record(prompt: str, out) -> dict:
    """The drift record of one finished request."""
    completion = out.outputs[0]
    n = len(completion.token_ids)
    mean = completion.cumulative_logprob / n if n and completion.cumulative_logprob else None
    return {
        "prompt": prompt,
        "output": completion.text,
        "output_tokens": n,
        "finish_reason": completion.finish_reason,
        "mean_logprob": mean,
    }


if __name__ == "__main__":
    main()
