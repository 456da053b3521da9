"""Perplexity of the default model on a fixed text in each precision tokenmill serves.

Speed must never buy wrong tokens: a faster precision is acceptable only if its
perplexity stays close to float32's. Prints a table and writes JSON next to it.

    .venv/bin/python benchmarks/perplexity.py [--out docs/perplexity.json]
"""

from __future__ import annotations

import argparse
import json
import math

from tokenmill import LLM, SamplingParams

# A fixed, public-domain passage (the opening of Darwin's "On the Origin of Species").
TEXT = (
    "When on board H.M.S. Beagle, as naturalist, I was much struck with certain facts in "
    "the distribution of the inhabitants of South America, and in the geological relations "
    "of the present to the past inhabitants of that continent. These facts seemed to me to "
    "throw some light on the origin of species, that mystery of mysteries, as it has been "
    "called by one of our greatest philosophers. On my return home, it occurred to me, in "
    "1837, that something might perhaps be made out on this question by patiently "
    "accumulating and reflecting on all sorts of facts which could possibly have any bearing "
    "on it. After five years' work I allowed myself to speculate on the subject, and drew up "
    "some short notes; these I enlarged in 1844 into a sketch of the conclusions, which then "
    "seemed to me probable: from that period to the present day I have steadily pursued the "
    "same object. I hope that I may be excused for entering on these personal details, as I "
    "give them to show that I have not been hasty in coming to a decision."
)

VARIANTS = {
    "float32": dict(dtype="float32"),
    "bfloat16": dict(dtype="bfloat16"),
    "int8 (W8A8, per-row)": dict(quantization="int8"),
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
        llm = LLM(kv_cache_memory_gib=0.1, max_model_len=2048, **kwargs)
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
