"""Cost of the output side over a long generation: is it linear in the output length?

Runs one request of N tokens (n completions, top logprobs) through EngineCore and times
`OutputProcessor.collect`, the step's output stage, in the first and the last tenth of
the run. With outputs that copy every token list each step the last tenth costs far
more than the first; with deltas they cost the same.

    python benchmarks/long_generation.py --tokens 2000 --n 4 --logprobs 5
"""

from __future__ import annotations

import argparse
import json
import time

from tokenmill.engine.core import EngineCore
from tokenmill.engine.request import GenerationRequest
from tokenmill.sampling_params import SamplingParams


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--logprobs", type=int, default=5)
    args = ap.parse_args()

    from tokenmill.config import EngineConfig
    from tokenmill.config.setting import build

    core = EngineCore(build(EngineConfig, {"max_model_len": args.tokens + 64, "num_threads": 1}))
    collect = core.outputs.collect
    times: list[float] = []

    def timed(*a, **kw):
        t0 = time.thread_time()  # CPU time of this thread: robust to a busy machine
        out = collect(*a, **kw)
        times.append(time.thread_time() - t0)
        return out

    core.outputs.collect = timed
    params = SamplingParams(
        n=args.n,
        temperature=0.8,
        seed=1,
        max_tokens=args.tokens,
        ignore_eos=True,
        logprobs=args.logprobs,
    )
    core.add_request(GenerationRequest("long", params, prompt="Tell me a long story."))
    started = time.perf_counter()
    while core.has_unfinished():
        core.step()
    total = time.perf_counter() - started
    tenth = max(1, len(times) // 10)
    first, last = sum(times[:tenth]) / tenth, sum(times[-tenth:]) / tenth
    print(
        json.dumps(
            {
                "tokens": args.tokens,
                "n": args.n,
                "logprobs": args.logprobs,
                "steps": len(times),
                "collect_ms_first_tenth": round(first * 1e3, 4),
                "collect_ms_last_tenth": round(last * 1e3, 4),
                "collect_s_total": round(sum(times), 3),
                "run_s": round(total, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
