"""Resident memory and batch-1 speed of `tokenmill serve --profile edge` against the
default profile, both serving the default model, side by side on one CPU core.

Both servers start at once under `taskset -c CORE` (the same core), so neither gets a
core the other lacks; requests then alternate (default, edge, default, edge, ...) so
that a neighbour's load falls on both alike, and the figures are medians. For each
server the program reads /proc/PID/status:

- steady RSS: VmRSS once the server is ready and again after the requests;
- peak RSS: VmHWM (the most the process was ever resident) after the requests.

Speed: one streamed greedy `/v1/completions` request at a time (batch 1), a ~50-token
prompt that differs each round (no cache can answer it), `--max-tokens` new tokens with ignore_eos. Decode tok/s counts the
tokens after the first over the time after the first; end-to-end tok/s counts them all
over the whole request. The greedy text of the two servers is compared too.

    python benchmarks/edge_profile.py [--core 1] [--rounds 5] [--max-tokens 128] \
        [--out docs/edge_profile.json]

A program, not a test: it prints the figures and a docs/benchmarks.md row, and saves
the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

PROMPT = (
    "The history of the river valley begins with the first farmers, who cleared the "
    "forest along its banks and planted wheat and barley in the rich soil. Over the "
    "centuries the villages grew into towns, and the towns"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_bytes(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of `pid`, in bytes."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM")}


class Server:
    """One `tokenmill serve` under taskset, with its log in `log_path`."""

    def __init__(self, name: str, flags: list[str], core: int, log_dir: Path):
        self.name, self.port = name, free_port()
        self.argv = [
            "taskset",
            "-c",
            str(core),
            sys.executable,
            "-m",
            "tokenmill.cli.main",
            "serve",
            "--port",
            str(self.port),
            *flags,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENMILL_")}
        self.log = open(log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=300)

    def wait_ready(self, timeout_s: float = 600) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
            try:
                if self.http.get("/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not ready after {timeout_s} s")

    def complete(self, prompt: str, max_tokens: int) -> dict:
        """One streamed greedy completion; its text and timings."""
        model = self.http.get("/v1/models").json()["data"][0]["id"]
        body = {
            "model": model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        start, stamps, text, usage = time.perf_counter(), [], [], None
        with self.http.stream("POST", "/v1/completions", json=body) as resp:
            resp.raise_for_status()
            for line in resp.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices", []):
                    if choice.get("text"):
                        stamps.append(time.perf_counter())
                        text.append(choice["text"])
        end = time.perf_counter()
        tokens = usage["completion_tokens"]
        return {
            "text": "".join(text),
            "tokens": tokens,
            "prompt_tokens": usage["prompt_tokens"],
            "ttft_s": stamps[0] - start,
            "decode_tok_s": (tokens - 1) / (stamps[-1] - stamps[0]),
            "e2e_tok_s": tokens / (end - start),
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.http.close()
        self.log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--core", type=int, default=1, help="the CPU both servers are pinned to")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--out", default="docs/edge_profile.json")
    ap.add_argument("--log-dir", default="/tmp/tokenmill-edge-bench")
    args = ap.parse_args()
    from tokenmill.bench.cpu import detect

    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    profiles = {"default": [], "edge": ["--profile", "edge"]}
    servers = {n: Server(n, f, args.core, log_dir) for n, f in profiles.items()}
    try:
        for s in servers.values():
            s.wait_ready()
        ready = {n: status_bytes(s.proc.pid) for n, s in servers.items()}
        runs: dict[str, list[dict]] = {n: [] for n in servers}
        for n, s in servers.items():  # warm-up, not counted
            s.complete("Hello", 8)
        for i in range(args.rounds):
            # A new prompt each round: the default profile's response cache and both
            # prefix caches would otherwise answer a repeat without computing it.
            prompt = f"Chapter {i + 1}. {PROMPT}"
            for n, s in servers.items():
                runs[n].append(s.complete(prompt, args.max_tokens))
        after = {n: status_bytes(s.proc.pid) for n, s in servers.items()}
        argv = {n: s.argv for n, s in servers.items()}
    finally:
        for s in servers.values():
            s.stop()
    results = {}
    for n in servers:
        results[n] = {
            "argv": argv[n],
            "rss_ready_bytes": ready[n]["VmRSS"],
            "rss_steady_bytes": after[n]["VmRSS"],
            "rss_peak_bytes": after[n]["VmHWM"],
            "decode_tok_s_median": statistics.median(r["decode_tok_s"] for r in runs[n]),
            "e2e_tok_s_median": statistics.median(r["e2e_tok_s"] for r in runs[n]),
            "ttft_s_median": statistics.median(r["ttft_s"] for r in runs[n]),
            "runs": runs[n],
        }
    same = all(a["text"] == b["text"] for a, b in zip(runs["default"], runs["edge"], strict=True))
    cpu = detect()
    record = {
        "command": "python benchmarks/edge_profile.py " + " ".join(sys.argv[1:]),
        "cpu": cpu.model,
        "core": args.core,
        "max_tokens": args.max_tokens,
        "rounds": args.rounds,
        "greedy_text_equal": same,
        "load_average_end": os.getloadavg(),
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    mib = 2**20
    print(f"CPU: {cpu.model}; both servers on core {args.core}; greedy text equal: {same}")
    print(
        "| profile | RSS ready MiB | RSS steady MiB | RSS peak MiB | decode tok/s b1 | "
        "e2e tok/s b1 | TTFT ms |"
    )
    print("|---|---|---|---|---|---|---|")
    for n, r in results.items():
        print(
            f"| {n} | {r['rss_ready_bytes'] / mib:.0f} | {r['rss_steady_bytes'] / mib:.0f} | "
            f"{r['rss_peak_bytes'] / mib:.0f} | {r['decode_tok_s_median']:.1f} | "
            f"{r['e2e_tok_s_median']:.1f} | {r['ttft_s_median'] * 1000:.0f} |"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
