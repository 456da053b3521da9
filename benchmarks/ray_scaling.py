"""Throughput of `tokenmill serve --ray` with 1 and 2 replicas on this machine.

Each layout gets the same CPUs: one replica with --num-threads N, or two replicas with
N/2 threads each. A Ray head is started in this process, the server joins it, and C
closed-loop clients send R distinct completions (no response cache); the
layouts alternate for --rounds rounds and the medians are reported.

  PYTHONPATH=src python benchmarks/ray_scaling.py --out docs/ray_scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tokenmill.bench.cpu import detect

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(address: str, replicas: int, threads: int, log: Path):
    port = free_port()
    cmd = [
        sys.executable, "-m", "tokenmill.cli.main", "serve", "--ray", "--ray-address", address,
        "--port", str(port), "--replicas", str(replicas), "--num-threads", str(threads),
        "--ray-replica-cpus", str(threads), "--max-num-seqs", "16",
        "--kv-cache-memory-gib", "0.25", "--max-model-len", "2048", "--response-cache", "off",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENMILL_")}
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited {proc.returncode}; see {log}")
        if "tokenmill: serving" in log.read_text(errors="replace"):
            try:
                if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                    return proc, url
            except httpx.TransportError:
                pass
        time.sleep(1)
    proc.kill()
    raise SystemExit(f"server not ready; see {log}")


def stop_server(proc) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def load(url: str, clients: int, requests: int, max_tokens: int) -> dict:
    """`requests` distinct completions of exactly `max_tokens` tokens (ignore_eos), sent by
    `clients` closed-loop clients; throughput is the work over the time to finish it all
    (a fixed amount of work: a timed window would count whole requests only, too coarse
    when one takes tens of seconds)."""
    pending = list(range(requests))
    tokens, errors, replicas = [0], [0], {}
    lock = threading.Lock()

    def client(c: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as http:
            while True:
                with lock:
                    if not pending:
                        return
                    n = pending.pop()
                body = {
                    "prompt": f"Request {n} from client {c}: write a short note about rivers.",
                    "max_tokens": max_tokens,
                    "temperature": 0,
                    "ignore_eos": True,
                }
                r = http.post("/v1/completions", json=body)
                with lock:
                    if r.status_code != 200:
                        errors[0] += 1
                        continue
                    tokens[0] += r.json()["usage"]["completion_tokens"]
                    rep = r.headers.get("x-tokenmill-replica", "?")
                    replicas[rep] = replicas.get(rep, 0) + 1

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    return {
        "seconds": elapsed,
        "requests_per_s": (requests - errors[0]) / elapsed,
        "tokens_per_s": tokens[0] / elapsed,
        "requests": requests,
        "errors": errors[0],
        "per_replica": replicas,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads in all")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import ray

    ray.init(num_cpus=args.threads, include_dashboard=False, configure_logging=False)
    address = ray.get_runtime_context().gcs_address
    layouts = [(1, args.threads), (2, max(1, args.threads // 2))]
    runs: dict[str, list[dict]] = {f"{r} replica(s) x {t} thread(s)": [] for r, t in layouts}
    try:
        for _ in range(args.rounds):
            for (replicas, threads), name in zip(layouts, runs, strict=True):
                log = Path(f"/tmp/ray_scaling_{replicas}.log")
                proc, url = start_server(address, replicas, threads, log)
                try:
                    load(url, 2, 2, 8)  # warm-up
                    result = load(url, args.clients, args.requests, args.max_tokens)
                finally:
                    stop_server(proc)
                print(name, json.dumps(result), flush=True)
                runs[name].append(result)
    finally:
        ray.shutdown()
    summary = {
        "cpu": detect().model,
        "logical_cpus": os.cpu_count(),
        "threads_in_all": args.threads,
        "clients": args.clients,
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        "command": " ".join(sys.argv),
        "layouts": {
            name: {
                "median_requests_per_s": statistics.median(r["requests_per_s"] for r in rs),
                "median_tokens_per_s": statistics.median(r["tokens_per_s"] for r in rs),
                "runs": rs,
            }
            for name, rs in runs.items()
        },
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
