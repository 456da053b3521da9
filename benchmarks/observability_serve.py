"""What metrics and tracing cost a server's throughput, measured with `tokenmill bench serve`.

Starts the default server three ways, all pinned to one CPU with one compute thread:
`metrics` (the defaults: metrics on, tracing off), `no-metrics` (`--metrics false`) and,
unless --no-tracing, `tracing` (defaults plus `--otlp-endpoint` at a sink in this
process that accepts OTLP/HTTP posts and drops them, so spans are really built, batched,
encoded and sent). Then runs `tokenmill bench serve` against each in turn on another
CPU, rotating the order every round, with the same prompts for every variant within a
round (seed = round) and fresh prompts across rounds (so the prefix cache does not
favour later rounds). Prints a markdown table of medians and ranges and writes the raw
runs as JSON.

    python benchmarks/observability_serve.py [--rounds 6] [--concurrency 4]
        [--num-prompts 16] [--input-len 64] [--output-len 32] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tokenmill.bench.cpu import detect
from tokenmill.bench.peers import ServerProcess, ServerSpec, free_port
from tokenmill.bench.proc import tree_cpu_seconds
from tokenmill.bench.spread import Spread

SERVER_CPU, CLIENT_CPU = 1, 0


class _Sink(BaseHTTPRequestHandler):
    """Accepts an OTLP/HTTP export, counts it, answers 200 with an empty body."""

    posts = 0
    bytes = 0

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length", 0))
        self.rfile.read(n)
        type(self).posts += 1
        type(self).bytes += n
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def bench(server: ServerProcess, args: argparse.Namespace, seed: int, out: Path) -> dict:
    """One `tokenmill bench serve` run on CLIENT_CPU; returns its level's metrics plus
    the server's CPU time per output token over the run (less sensitive than throughput
    to other jobs on a shared machine: time the server waits for the CPU is not counted).
    """
    url = server.spec.url
    argv = [
        "taskset", "-c", str(CLIENT_CPU), sys.executable, "-m", "tokenmill.cli.main",
        "bench", "serve", "--url", url, "--concurrency", str(args.concurrency),
        "--num-prompts", str(args.num_prompts), "--input-len", str(args.input_len),
        "--output-len", str(args.output_len), "--seed", str(seed), "--no-progress",
        "--result-json", str(out),
    ]  # fmt: skip
    cpu_before = tree_cpu_seconds([server.pid])
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    cpu_s = tree_cpu_seconds([server.pid]) - cpu_before
    metrics = json.loads(out.read_text())["levels"][0]["metrics"]
    if metrics["failed"]:
        raise SystemExit(f"{url}: {metrics['failed']} requests failed: {metrics['errors']}")
    metrics["server_cpu_ms_per_token"] = 1000 * cpu_s / metrics["total_output_tokens"]
    return metrics


def summarize(runs: dict[str, list[dict]]) -> dict:
    """Per variant: output tok/s, TTFT p50 and TPOT p50, each as a Spread; and per round,
    each variant's throughput relative to `metrics` in the same round (paired)."""
    out = {}
    for name, rs in runs.items():
        out[name] = {
            "output_tok_s": Spread.of([r["output_throughput"] for r in rs]),
            "ttft_p50_ms": Spread.of([r["ttft"]["p50"] for r in rs]),
            "tpot_p50_ms": Spread.of([r["tpot"]["p50"] for r in rs]),
            "cpu_ms_per_token": Spread.of([r["server_cpu_ms_per_token"] for r in rs]),
        }
        base = runs["metrics"]
        out[name]["vs_metrics"] = Spread.of(
            [r["output_throughput"] / b["output_throughput"] for r, b in zip(rs, base)]
        )
        out[name]["cpu_vs_metrics"] = Spread.of(
            [r["server_cpu_ms_per_token"] / b["server_cpu_ms_per_token"] for r, b in zip(rs, base)]
        )
    return out


def table(summary: dict) -> str:
    rows = [
        (
            "| variant | output tok/s, median (range) | range / median | vs metrics-on, "
            "same round | TTFT p50 ms | TPOT p50 ms | server CPU ms per output token | CPU vs "
            "metrics-on, same round |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        tps = s["output_tok_s"]
        rows.append(
            f"| {name} | {tps.render()} | {100 * tps.relative:.1f}% | "
            f"{s['vs_metrics'].render(3)} | {s['ttft_p50_ms'].render(0)} | "
            f"{s['tpot_p50_ms'].render(1)} | {s['cpu_ms_per_token'].render(1)} | "
            f"{s['cpu_vs_metrics'].render(3)} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--num-prompts", type=int, default=16)
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--no-tracing", dest="tracing", action="store_false")
    parser.add_argument("--out", type=Path, default=Path("docs/observability_serve.json"))
    args = parser.parse_args()

    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    otlp = f"http://127.0.0.1:{sink.server_address[1]}/v1/traces"
    variants = {"metrics": [], "no-metrics": ["--metrics", "false"]}
    if args.tracing:
        variants["tracing"] = ["--otlp-endpoint", otlp]
    serve = [sys.executable, "-m", "tokenmill.cli.main", "serve", "--host", "127.0.0.1"]
    logs = Path(tempfile.mkdtemp(prefix="tokenmill-obs-serve-"))
    servers = []
    for name, extra in variants.items():
        port = free_port()
        argv = [*serve, "--port", str(port), "--num-threads", "1", *extra]
        servers.append(ServerProcess(ServerSpec(name, argv, port, cpus=(SERVER_CPU,)), logs))
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    loads: list[float] = []
    with contextlib.ExitStack() as stack:
        started = [stack.enter_context(s) for s in servers]
        for s in started:  # warm-up: kernels, caches, first-call paths
            bench(s, args, 10_000, logs / f"warm-{s.spec.name}.json")
        for rnd in range(args.rounds):
            order = started[rnd % len(started) :] + started[: rnd % len(started)]
            for s in order:
                loads.append(os.getloadavg()[0])
                m = bench(s, args, rnd, logs / f"{s.spec.name}-{rnd}.json")
                runs[s.spec.name].append(m)
                print(f"round {rnd} {s.spec.name}: {m['output_throughput']:.1f} tok/s", flush=True)
    sink.shutdown()
    summary = summarize(runs)
    cpu = detect()
    text = table(summary)
    print(text)
    print(f"CPU: {cpu.model}, {cpu.flag_summary()}; load average {min(loads):.1f}-{max(loads):.1f}")
    print(f"OTLP sink: {_Sink.posts} posts, {_Sink.bytes} bytes")
    record = {
        "settings": {**vars(args), "out": str(args.out), "server_cpu": SERVER_CPU,
                     "client_cpu": CLIENT_CPU, "commands": {k: v for k, v in variants.items()}},
        "cpu": cpu.to_dict(),
        "load_avg": loads,
        "otlp_sink": {"posts": _Sink.posts, "bytes": _Sink.bytes},
        "runs": runs,
        "summary": {n: {k: vars(v) for k, v in s.items()} for n, s in summary.items()},
        "table": text,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
