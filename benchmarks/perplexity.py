"""Perplexity of the default model on a fixed text in each precision tokenmill serves.

Speed must never buy wrong tokens: a faster precision is acceptable only if its
perplexity stays close to float32's. Prints a table and writes JSON next to it.

    .venv/bin/python benchmarks/perplexity.py [--out docs/perplexity.json]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from tokenmill import LLM, SamplingParams

# A fixed text: 9,000 characters (~1,900 tokens) of the GNU GPL v3, whose verbatim
# copying is permitted. Short passages give noisy perplexities for quantized variants.
TEXT = (Path(__file__).parent / "data" / "gpl3_excerpt.txt").read_text()

VARIANTS = {
    "float32": {"dtype": "float32"},
    "bfloat16": {"dtype": "bfloat16"},
    "int8 (W8A8, per-row)": {"quantization": "int8"},
}


def perplexity(llm: LLM, text: str) -> tuple[float, int]:
    """exp(mean negative log-likelihood) of the text's tokens after the first."""
    params = SamplingParams(max_tokens=0, prompt_logprobs=0, temperature=0.0)
    out = llm.generate(text, params)[0]
    lps = [pos[tok].logprob for tok, pos in zip(out.prompt_token_ids[1:], out.prompt_logprobs[1:])]
    return math.exp(-sum(lps) / len(lps)), len(lps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="write results as JSON here")
    args = ap.parse_args()
    results = {}
    for name, kwargs in VARIANTS.items():
        llm = LLM(kv_cache_memory_gib=0.3, max_model_len=4096, **kwargs)
        ppl, n = perplexity(llm, TEXT)
        results[name] = ppl
        print(f"{name:24s} perplexity {ppl:8.4f} over {n} tokens", flush=True)
        del llm
    base = results["float32"]
    for name, ppl in results.items():
        print(f"{name:24s} {100 * (ppl / base - 1):+.2f}% vs float32")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
