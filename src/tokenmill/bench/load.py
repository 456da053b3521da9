"""The load generator: closed-loop concurrency or Poisson arrivals, bounded in time.

A closed loop keeps exactly `concurrency` requests in flight, sending the next as one
finishes. Poisson arrivals send requests at exponentially distributed intervals with the
given mean rate, whatever is in flight (rate inf sends them all at once).
"""

from __future__ import annotations

import asyncio
import math
import random
import sys
import time
from dataclasses import dataclass

import httpx
from tqdm import tqdm

from tokenmill.bench.client import RequestOptions, send_request
from tokenmill.bench.metrics import SLO, BenchmarkMetrics, RequestResult, summarize
from tokenmill.bench.workload import BenchRequest

CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class LoadLevel:
    """One load level: exactly one of a closed-loop concurrency or an arrival rate (req/s)."""

    concurrency: int | None = None
    request_rate: float | None = None

    def __post_init__(self) -> None:
        if (self.concurrency is None) == (self.request_rate is None):
            raise ValueError("A load level has either a concurrency or a request rate.")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}.")
        if self.request_rate is not None and not self.request_rate > 0:
            raise ValueError(f"request rate must be positive, got {self.request_rate}.")

    @property
    def label(self) -> str:
        """A short name for the level: concurrency 8, or rate 4/s."""
        if self.concurrency is not None:
            return f"concurrency {self.concurrency}"
        return f"rate {self.request_rate:g}/s"


@dataclass(frozen=True)
class LevelResult:
    """A measured level: its summary and every request's result."""

    level: LoadLevel
    metrics: BenchmarkMetrics
    results: list[RequestResult]


def make_client(base_url: str, request_timeout_s: float) -> httpx.AsyncClient:
    """An httpx client with no pool limit (the load generator sets concurrency itself)."""
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        timeout=httpx.Timeout(request_timeout_s, connect=CONNECT_TIMEOUT_S, pool=None),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
    )


async def warm_up(
    client: httpx.AsyncClient, options: RequestOptions, request: BenchRequest
) -> None:
    """Send one request outside any measurement; raises RuntimeError if it fails, so a
    misconfigured server is reported before a level is spent on it."""
    result = await send_request(client, options, request)
    if not result.success:
        raise RuntimeError(f"warm-up request failed: {result.error}")


async def run_level(
    client: httpx.AsyncClient,
    options: RequestOptions,
    requests: list[BenchRequest],
    level: LoadLevel,
    slo: SLO,
    seed: int = 0,
    max_duration_s: float = 600.0,
    progress: bool = True,
) -> LevelResult:
    """Send every request of `requests` at `level`; return its metrics.

    Requests still in flight or unsent when `max_duration_s` runs out are cancelled and
    counted as failed, with the limit as their error.
    """
    results: list[RequestResult | None] = [None] * len(requests)
    bar = tqdm(total=len(requests), desc=level.label, file=sys.stderr, disable=not progress)

    async def one(i: int) -> None:
        results[i] = await send_request(client, options, requests[i])
        bar.update(1)

    async def closed_loop(concurrency: int) -> None:
        next_index = iter(range(len(requests)))

        async def worker() -> None:
            for i in next_index:
                await one(i)

        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(requests)))))

    async def poisson(rate: float) -> None:
        rng = random.Random(seed)
        tasks = []
        try:
            for i in range(len(requests)):
                tasks.append(asyncio.create_task(one(i)))
                if not math.isinf(rate):
                    await asyncio.sleep(rng.expovariate(rate))
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()

    start = time.perf_counter()
    driver = closed_loop(level.concurrency) if level.concurrency else poisson(level.request_rate)
    try:
        await asyncio.wait_for(driver, timeout=max_duration_s)
    except asyncio.TimeoutError:
        pass
    finally:
        bar.close()
    duration = time.perf_counter() - start
    limit = f"not finished within the level's {max_duration_s:g} s limit"
    done = [
        r if r is not None else RequestResult(False, req.prompt_len, error=limit)
        for r, req in zip(results, requests)
    ]
    return LevelResult(level=level, metrics=summarize(done, duration, slo), results=done)
