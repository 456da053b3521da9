"""Resident memory and speed of the default model under the edge profile.

Each configuration runs in a fresh subprocess (so one's memory never counts toward
another's) that loads the model through `tokenmill.LLM`, then reports:

- RSS after load and peak RSS (VmRSS / VmHWM from /proc/self/status), which include
  the Python interpreter, torch and the KV cache;
- the model's weights in memory;
- tokens/s generating 64 greedy tokens for one 64-token prompt (batch 1) and for 4;
- perplexity on the held-out text, to show the footprint did not cost correctness.

Configurations: the default serving settings (float32), the edge profile with int8
quantized at load time, and the edge profile on a pre-quantized SmoothQuant directory
(`--int8-dir`, written by `tokenmill optimize quantize --method int8`).

    python benchmarks/edge_profile.py [--int8-dir out/int8] [--out docs/optimize/edge.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, math, random, sys, time
from tokenmill import LLM, SamplingParams
from tokenmill.optimize import data
from tokenmill.optimize.evaluation import module_bytes

def status():
    fields = dict(l.split(':', 1) for l in open('/proc/self/status'))
    return {k: int(fields[k].split()[0]) * 1024 for k in ('VmRSS', 'VmHWM')}

kwargs = json.loads(sys.argv[1])
llm = LLM(**kwargs)
after_load = status()
rng = random.Random(0)
prompts = [[rng.randrange(17, 49152) for _ in range(64)] for _ in range(4)]
greedy = SamplingParams(temperature=0.0, max_tokens=64, ignore_eos=True)
llm.generate(prompts[:1], SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True))
speed = {}
for b in (1, 4):
    start = time.perf_counter()
    outs = llm.generate(prompts[:b], greedy)
    speed[b] = sum(len(o.outputs[0].token_ids) for o in outs) / (time.perf_counter() - start)
out = llm.generate(data.heldout_text(), SamplingParams(max_tokens=0, prompt_logprobs=0))[0]
lps = [p[t].logprob for t, p in zip(out.prompt_token_ids[1:], out.prompt_logprobs[1:])]
print(json.dumps({
    "rss_after_load_bytes": after_load["VmRSS"],
    "peak_rss_bytes": status()["VmHWM"],
    "weights_bytes": module_bytes(llm.engine.loaded.model),
    "tok_s_batch1": speed[1],
    "tok_s_batch4": speed[4],
    "perplexity": math.exp(-sum(lps) / len(lps)),
}))
"""


def measure(kwargs: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(kwargs)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ},
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--int8-dir", help="a `tokenmill optimize quantize --method int8` output")
    ap.add_argument("--out", default="docs/optimize/edge.json")
    ap.add_argument("--only", help="measure only configurations whose name contains this")
    args = ap.parse_args()
    from tokenmill.optimize.edge import EDGE

    configs = {
        "default (float32, 1 GiB KV, cores-1 threads)": {"dtype": "float32"},
        "edge, int8 quantized at load": EDGE.engine_kwargs(),
    }
    if args.int8_dir:
        edge = EDGE.engine_kwargs()
        del edge["quantization"]  # the directory says int8 itself
        configs["edge, pre-quantized SmoothQuant int8 directory"] = {"model": args.int8_dir, **edge}
    if args.only:
        configs = {k: v for k, v in configs.items() if args.only in k}
    results = {}
    print(f"load average {os.getloadavg()}", flush=True)
    for name, kwargs in configs.items():
        start = time.perf_counter()
        results[name] = {"settings": kwargs, **measure(kwargs)}
        r = results[name]
        print(
            f"{name}: RSS {r['rss_after_load_bytes'] / 2**20:.0f} MiB after load, peak "
            f"{r['peak_rss_bytes'] / 2**20:.0f} MiB, weights {r['weights_bytes'] / 2**20:.0f} "
            f"MiB, {r['tok_s_batch1']:.1f} tok/s batch 1, {r['tok_s_batch4']:.1f} batch 4, "
            f"perplexity {r['perplexity']:.3f} ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"load_average_end": os.getloadavg(), "results": results}, indent=2) + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
