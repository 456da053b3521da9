"""The reliability soak of issue 14: a server under mixed traffic for a long while.

Starts `tokenmill serve` on a free loopback port (or uses --url), measures small
requests' time to first token on the quiet server, then for --duration seconds runs
side by side:

- `tokenmill bench serve` rounds (streamed completions, closed loop) as the main load;
- a non-streamed chat client;
- a client that starts streams and hangs up after a few tokens (cancellations);
- a slowloris client trickling a header byte a second, reconnecting whenever the server
  closes it (what it gets back is counted, never as an error);
- a probe: a small streamed chat every --probe-interval seconds, whose TTFT is
  compared with the quiet figure;
- the server's RSS, sampled from /proc every 10 s.

It writes a JSON record and prints a summary; the figures go to docs/reliability.md.
Usage:
    python benchmarks/soak.py --duration 1800 --out benchmarks/results/soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

SMALL = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tokenmill() -> list[str]:
    script = Path(sys.executable).parent / "tokenmill"
    return [str(script)] if script.exists() else [sys.executable, "-m", "tokenmill.cli.main"]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def ttft_ms(http: httpx.AsyncClient) -> tuple[int, float | None]:
    """(status, ms to the first content chunk) of one small streamed chat."""
    started = time.perf_counter()
    async with http.stream("POST", "/v1/chat/completions", json={**SMALL, "stream": True}) as r:
        if r.status_code != 200:
            await r.aread()
            return r.status_code, None
        first = None
        async for line in r.aiter_lines():
            if first is None and line.startswith("data: {") and '"content"' in line:
                first = (time.perf_counter() - started) * 1000
        return 200, first


class Soak:
    def __init__(self, url: str, pid: int | None, duration_s: float, probe_interval_s: float):
        self.url = url
        self.pid = pid
        self.duration_s = duration_s
        self.probe_interval_s = probe_interval_s
        self.statuses: dict[str, Counter] = {}
        self.unexpected: list[str] = []
        self.probe_ms: list[float] = []
        self.probe_at: list[float] = []
        """When each probe of probe_ms started, in seconds from the start of the load."""
        self.round_starts: list[float] = []
        """When each `bench serve` round was started, in seconds from the start of the load."""
        self.started = 0.0
        self.rss: list[tuple[float, float]] = []
        self.load: list[float] = []
        """The machine's 1-minute load average, sampled with the RSS."""
        self.bench_rounds: list[dict] = []
        self.slowloris = Counter()
        self.deadline = 0.0

    def count(self, client: str, status: int | str, expected: bool = False) -> None:
        self.statuses.setdefault(client, Counter())[str(status)] += 1
        if status != 200 and not expected:
            self.unexpected.append(f"{client}: {status}")

    def running(self) -> bool:
        return time.monotonic() < self.deadline

    async def quiet_ttft(self, n: int) -> list[float]:
        async with httpx.AsyncClient(base_url=self.url, timeout=120) as http:
            for _ in range(3):  # warm-up
                await ttft_ms(http)
            out = []
            for _ in range(n):
                status, ms = await ttft_ms(http)
                if status == 200 and ms is not None:
                    out.append(ms)
            return out

    async def probe(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=300) as http:
            while self.running():
                at = time.monotonic() - self.started
                try:
                    status, ms = await ttft_ms(http)
                except httpx.HTTPError as exc:
                    status, ms = type(exc).__name__, None
                self.count("probe", status)
                if ms is not None:
                    self.probe_ms.append(ms)
                    self.probe_at.append(round(at, 2))
                await asyncio.sleep(self.probe_interval_s)

    async def plain(self) -> None:
        body = {"messages": [{"role": "user", "content": "Name three colours."}], "max_tokens": 32}
        async with httpx.AsyncClient(base_url=self.url, timeout=300) as http:
            while self.running():
                try:
                    status = (await http.post("/v1/chat/completions", json=body)).status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                self.count("non-stream", status)
                await asyncio.sleep(0.5)

    async def cancelling(self) -> None:
        body = {"prompt": "Once upon a time", "max_tokens": 400, "stream": True}
        async with httpx.AsyncClient(base_url=self.url, timeout=300) as http:
            while self.running():
                try:
                    async with http.stream("POST", "/v1/completions", json=body) as r:
                        status = r.status_code
                        seen = 0
                        async for line in r.aiter_lines():
                            seen += line.startswith("data: ")
                            if seen >= 3:
                                break  # hang up mid-stream
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                self.count("cancel", status)
                await asyncio.sleep(1.0)

    async def slow_loris(self) -> None:
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        while self.running():
            try:
                reader, writer = await asyncio.open_connection(host, int(port))
            except OSError as exc:
                self.slowloris[f"connect {type(exc).__name__}"] += 1
                await asyncio.sleep(1)
                continue
            self.slowloris["connections"] += 1
            request = b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 10**6
            try:
                for byte in request:
                    if not self.running():
                        break
                    writer.write(bytes([byte]))
                    await writer.drain()
                    with contextlib.suppress(asyncio.TimeoutError):
                        reply = await asyncio.wait_for(reader.read(64), 1.0)
                        self.slowloris[reply.split(b"\r\n")[0].decode() or "closed"] += 1
                        break  # answered or closed: reconnect
            except OSError:
                self.slowloris["reset"] += 1
            writer.close()

    async def sample_rss(self) -> None:
        if self.pid is None:
            return
        started = time.monotonic()
        while self.running():
            self.rss.append((time.monotonic() - started, rss_mib(self.pid)))
            self.load.append(os.getloadavg()[0])
            await asyncio.sleep(10)

    async def bench(self, concurrency: int, prompts: int, out_dir: Path) -> None:
        rounds = 0
        while self.running():
            path = out_dir / f"bench-{rounds}.json"
            self.round_starts.append(round(time.monotonic() - self.started, 2))
            proc = await asyncio.create_subprocess_exec(
                *tokenmill(),
                "bench",
                "serve",
                "--url",
                self.url,
                "--concurrency",
                str(concurrency),
                "--num-prompts",
                str(prompts),
                "--input-len",
                "64",
                "--output-len",
                "64",
                "--seed",
                str(rounds),
                "--no-progress",
                "--result-json",
                str(path),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            await proc.wait()
            rounds += 1
            if proc.returncode != 0 or not path.exists():
                self.count("bench serve", f"exit {proc.returncode}")
                continue
            metrics = json.loads(path.read_text())["levels"][0]["metrics"]
            self.bench_rounds.append(metrics)
            self.statuses.setdefault("bench serve", Counter())["200"] += metrics["completed"]
            if metrics["failed"]:
                self.statuses["bench serve"]["failed"] += metrics["failed"]
                self.unexpected += [f"bench serve: {e}" for e in metrics["errors"]]

    async def run(self, args: argparse.Namespace, out_dir: Path) -> dict:
        quiet = await self.quiet_ttft(args.quiet_probes)
        self.started = time.monotonic()
        self.deadline = self.started + self.duration_s
        await asyncio.gather(
            self.bench(args.concurrency, args.bench_prompts, out_dir),
            self.plain(),
            self.cancelling(),
            self.slow_loris(),
            self.probe(),
            self.sample_rss(),
        )
        return self.summary(quiet, args)

    def summary(self, quiet: list[float], args: argparse.Namespace) -> dict:
        quiet_p99 = float(np.percentile(quiet, 99)) if quiet else None
        load_p99 = float(np.percentile(self.probe_ms, 99)) if self.probe_ms else None
        warm = [mib for t, mib in self.rss if t >= self.duration_s * 0.1]
        rss = None
        if len(warm) >= 2:
            rss = {
                "after_warmup_mib": warm[0],
                "end_mib": warm[-1],
                "max_mib": max(warm),
                "change_pct": 100 * (warm[-1] - warm[0]) / warm[0],
            }
        return {
            "duration_s": self.duration_s,
            "args": {k: v for k, v in vars(args).items() if k != "out"},
            "load_average_1min": {
                "min": min(self.load, default=None),
                "median": float(np.median(self.load)) if self.load else None,
                "max": max(self.load, default=None),
                "cores": os.cpu_count(),
            },
            "statuses": {k: dict(v) for k, v in self.statuses.items()},
            "unexpected": self.unexpected[:50],
            "unexpected_count": len(self.unexpected),
            "ttft_ms": {
                "quiet_p99": quiet_p99,
                "under_load_p99": load_p99,
                "ratio": load_p99 / quiet_p99 if quiet_p99 and load_p99 else None,
                "quiet_samples": len(quiet),
                "load_samples": len(self.probe_ms),
                "under_load_percentiles": {
                    str(q): float(np.percentile(self.probe_ms, q)) if self.probe_ms else None
                    for q in (50, 90, 95, 99)
                },
            },
            "probe_samples": [list(x) for x in zip(self.probe_at, self.probe_ms, strict=True)],
            "bench_round_starts": self.round_starts,
            "rss": rss,
            "rss_samples": self.rss,
            "slowloris": dict(self.slowloris),
            "bench_rounds": len(self.bench_rounds),
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=1800.0, help="seconds (default 1800)")
    p.add_argument("--url", help="a running server (default: start one here)")
    p.add_argument("--concurrency", type=int, default=4, help="bench serve streams")
    p.add_argument("--bench-prompts", type=int, default=16, help="requests per bench round")
    p.add_argument("--probe-interval", type=float, default=2.0)
    p.add_argument("--quiet-probes", type=int, default=30)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/soak.json"))
    p.add_argument("serve_flags", nargs="*", help="extra `tokenmill serve` flags (after --)")
    args = p.parse_args(argv)
    server = None
    url = args.url
    if url is None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = open(tempfile.mktemp(prefix="soak-serve-", suffix=".log"), "wb")  # noqa: SIM115
        server = subprocess.Popen(
            [*tokenmill(), "serve", "--port", str(port), *args.serve_flags],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 600
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                print(f"server did not start; log: {log.name}", file=sys.stderr)
                return 1
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/ready", timeout=5).status_code == 200:
                    break
            time.sleep(0.5)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            soak = Soak(url, server.pid if server else None, args.duration, args.probe_interval)
            result = asyncio.run(soak.run(args, Path(tmp)))
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            result_code = server.wait(timeout=120)
    if server is not None:
        result["server_exit_code"] = result_code
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    bulky = ("rss_samples", "probe_samples", "bench_round_starts")
    print(json.dumps({k: v for k, v in result.items() if k not in bulky}, indent=2))
    return 0 if result["unexpected_count"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
