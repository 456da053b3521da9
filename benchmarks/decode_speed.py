"""Single-stream decode speed of the default configuration, one compute thread.

One process per run: loads the default model with its defaults (`LLM(num_threads=1)`,
plus any `--dtype`), warms up, then generates `--new-tokens` greedy tokens (EOS
ignored) after a `--prompt-len`-token random prompt, `--repeats` times. Each repeat
reports output tok/s over wall time and over the process's CPU time (which other
processes on a busy machine disturb less), and the decode-only rate (the first token,
i.e. the prefill, excluded). Prints one JSON line, so a driver can run two source trees
interleaved (A, B, A, B, ...) with PYTHONPATH pointing at each:

    PYTHONPATH=src python benchmarks/decode_speed.py [--repeats 3] [--dtype auto]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time

import torch

from tokenmill import LLM, SamplingParams
from tokenmill.bench.cpu import detect


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt-len", type=int, default=80)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default=None, help="default: the engine's own default")
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    extra = {} if args.dtype is None else {"dtype": args.dtype}
    llm = LLM(num_threads=1, enable_prefix_caching=False, **extra)
    torch.set_num_threads(1)
    rng = random.Random(0)
    prompt = [rng.randrange(17, 49152) for _ in range(args.prompt_len)]
    greedy = SamplingParams(temperature=0, max_tokens=args.new_tokens, ignore_eos=True)
    one = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)
    llm.generate([prompt], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))
    wall, cpu, decode, tokens = [], [], [], None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        llm.generate([prompt], one)  # prefill + first token: subtracted below
        t1, c1 = time.perf_counter(), time.process_time()
        out = llm.generate([prompt], greedy)
        t2, c2 = time.perf_counter(), time.process_time()
        ids = list(out[0].outputs[0].token_ids)
        assert len(ids) == args.new_tokens, len(ids)
        assert tokens is None or ids == tokens, "greedy output changed between repeats"
        tokens = ids
        first = t1 - t0
        wall.append(args.new_tokens / (t2 - t1))
        cpu.append(args.new_tokens / (c2 - c1))
        decode.append((args.new_tokens - 1) / max(t2 - t1 - first, 1e-9))
    loaded = llm.engine.loaded
    print(
        json.dumps(
            {
                "label": args.label,
                "kernel_path": getattr(loaded, "kernel_path", None),
                "dtype": str(loaded.dtype),
                "tok_s_wall": [round(x, 2) for x in wall],
                "tok_s_cpu": [round(x, 2) for x in cpu],
                "decode_tok_s_wall": [round(x, 2) for x in decode],
                "median_wall": round(statistics.median(wall), 2),
                "median_cpu": round(statistics.median(cpu), 2),
                "first_tokens": tokens[:8],
                "cpu": detect().model,
                "load": [round(x, 2) for x in os.getloadavg()],
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
