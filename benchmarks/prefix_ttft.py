"""Time to first token with a shared 1,000-token system prompt, prefix caching on vs off.

    .venv/bin/python benchmarks/prefix_ttft.py [--quantization int8] [--repeats 5]

Each measured request shares the system prompt and differs in its last user turn, as
chat traffic does. With caching on, the first request (not measured) fills the cache.
"""

from __future__ import annotations

import argparse
import statistics
import time

import tokenmill  # noqa: F401  (sets the OpenMP wait policy before torch loads)
from tokenmill import LLM, SamplingParams


def ttft_ms(llm: LLM, prompts: list[list[int]]) -> list[float]:
    """Wall time to the first sampled token (max_tokens=1) for each prompt in turn."""
    out = []
    for ids in prompts:
        t = time.perf_counter()
        llm.generate([ids], SamplingParams(max_tokens=1, temperature=0.0))
        out.append((time.perf_counter() - t) * 1e3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quantization", default=None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--system-tokens", type=int, default=1000)
    args = ap.parse_args()
    system = [100 + (i * 37) % 30000 for i in range(args.system_tokens)]
    prompts = [system + [500 + r, 600 + r, 700 + r, 800 + r] for r in range(args.repeats + 1)]
    results = {}
    for caching in (False, True):
        llm = LLM(quantization=args.quantization, enable_prefix_caching=caching)
        times = ttft_ms(llm, prompts)[1:]  # the first fills the cache (or warms up)
        results[caching] = statistics.median(times)
        label = "on " if caching else "off"
        print(f"prefix caching {label}: TTFT p50 {results[caching]:.1f} ms over {len(times)}")
        del llm
    print(f"speed-up: {results[False] / results[True]:.1f}x")


if __name__ == "__main__":
    main()
