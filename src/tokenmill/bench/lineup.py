"""The peers of a comparison and one way to drive each: `start` gives a `Peer` whatever
it runs on (an HTTP server, or the transformers worker), and every peer answers `run`
for one level with the same metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tokenmill.bench.client import RequestOptions
from tokenmill.bench.hf_worker import HFWorker
from tokenmill.bench.llama import llama_server_spec
from tokenmill.bench.load import LoadLevel, make_client, run_level, warm_up
from tokenmill.bench.metrics import SLO, BenchmarkMetrics, summarize
from tokenmill.bench.peers import ServerProcess, ServerSpec, tokenmill_spec
from tokenmill.bench.pinning import CorePlan
from tokenmill.bench.serve import discover_model
from tokenmill.bench.workload import BenchRequest

TOKENMILL, LLAMA, TRANSFORMERS = "tokenmill", "llama-server", "transformers"
KINDS = (TOKENMILL, LLAMA, TRANSFORMERS)
CTX_MARGIN = 64
CTX_ROUND = 256


@dataclass(frozen=True)
class PeerDef:
    """A row of the comparison: what to start."""

    name: str
    kind: str
    args: tuple[str, ...] = ()
    """Extra `tokenmill serve` arguments (tokenmill rows only)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown peer kind {self.kind!r}; choose from {KINDS}.")


@dataclass(frozen=True)
class StartContext:
    """What starting a peer needs beyond its definition."""

    gguf: Path
    log_dir: Path
    llama_binary: Path | None
    """The llama-server that passed its probe; None when it could not be had."""
    transformers_dtype: str
    startup_timeout_s: float
    max_concurrency: int
    """Streams the suite runs at most (llama-server's slot count)."""
    max_tokens_per_request: int
    """Longest prompt plus output of the suite (llama-server's context per slot)."""


class Peer(Protocol):
    """A started peer."""

    name: str
    settings: dict[str, str]

    @property
    def pid(self) -> int:
        """The root of its process tree."""
        ...

    def poll(self) -> int | None:
        """Its exit status once it has exited, else None."""
        ...

    def warm_up(self, request: BenchRequest) -> None:
        """One request outside any measurement; raises if it fails."""
        ...

    def run(
        self, requests: list[BenchRequest], concurrency: int, timeout_s: float, slo: SLO
    ) -> BenchmarkMetrics:
        """Send `requests` with `concurrency` in flight; return the level's metrics."""
        ...


class ServerPeer:
    """A server peer, driven over HTTP by the load generator."""

    def __init__(self, name: str, server: ServerProcess, settings: dict[str, str]) -> None:
        self.name, self.server, self.settings = name, server, settings
        self.options = RequestOptions(model=discover_model(server.spec.url))

    @property
    def pid(self) -> int:
        return self.server.pid

    def poll(self) -> int | None:
        return self.server.poll()

    def warm_up(self, request: BenchRequest) -> None:
        async def go() -> None:
            async with make_client(self.server.spec.url, 600.0) as client:
                await warm_up(client, self.options, request)

        asyncio.run(go())

    def run(self, requests, concurrency, timeout_s, slo) -> BenchmarkMetrics:
        async def go() -> BenchmarkMetrics:
            async with make_client(self.server.spec.url, timeout_s) as client:
                level = LoadLevel(concurrency=concurrency)
                result = await run_level(
                    client, self.options, requests, level, slo, 0, timeout_s, progress=False
                )
                return result.metrics

        return asyncio.run(go())


class WorkerPeer:
    """The transformers baseline in its worker process."""

    def __init__(self, name: str, worker: HFWorker, settings: dict[str, str]) -> None:
        self.name, self.worker, self.settings = name, worker, settings

    @property
    def pid(self) -> int:
        return self.worker.pid

    def poll(self) -> int | None:
        return self.worker.poll()

    def warm_up(self, request: BenchRequest) -> None:
        short = BenchRequest(request.prompt, request.prompt_len, output_len=2)
        results, _ = self.worker.run([short], 1, 600.0)
        if not results[0].success:
            raise RuntimeError(f"warm-up request failed: {results[0].error}")

    def run(self, requests, concurrency, timeout_s, slo) -> BenchmarkMetrics:
        results, duration = self.worker.run(requests, concurrency, timeout_s)
        return summarize(results, duration, slo)


def server_spec(defn: PeerDef, plan: CorePlan, ctx: StartContext) -> ServerSpec:
    """How to start a server peer under `plan`."""
    if defn.kind == TOKENMILL:
        return tokenmill_spec(
            defn.name, list(defn.args), plan.threads, plan.peer_cpus, ctx.startup_timeout_s
        )
    assert ctx.llama_binary is not None
    per_slot = -(-(ctx.max_tokens_per_request + CTX_MARGIN) // CTX_ROUND) * CTX_ROUND
    return llama_server_spec(
        ctx.llama_binary,
        ctx.gguf,
        ctx.max_concurrency,
        per_slot,
        plan.threads,
        plan.peer_cpus,
        ctx.startup_timeout_s,
    )


@contextlib.contextmanager
def start(defn: PeerDef, plan: CorePlan, ctx: StartContext) -> Iterator[Peer]:
    """Start `defn` under `plan` and stop it on exit. Raises PeerUnavailable (exit status
    included) when it cannot start."""
    if defn.kind == TRANSFORMERS:
        with HFWorker(
            plan.threads,
            ctx.transformers_dtype,
            plan.peer_cpus,
            ctx.log_dir,
            ctx.startup_timeout_s,
        ) as worker:
            settings = {
                "engine": "transformers generate, static batches",
                "dtype": ctx.transformers_dtype,
                "threads": str(plan.threads),
                "command": " ".join(worker.argv),
            }
            yield WorkerPeer(defn.name, worker, settings)
        return
    with ServerProcess(server_spec(defn, plan, ctx), ctx.log_dir) as server:
        settings = {"threads": str(plan.threads), "command": " ".join(server.argv)}
        yield ServerPeer(defn.name, server, settings)
