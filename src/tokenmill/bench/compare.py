"""`tokenmill bench compare`: tokenmill and its peers, one after another, same workload.

Peers: tokenmill (`tokenmill serve`), llama.cpp's llama-server (built from the
llama-cpp-python sdist, CPU only), and transformers `generate` with static batching. Each
runs alone on 127.0.0.1, on the packaged SmolLM2 GGUF, with the same prompts. A peer that
cannot be built or started keeps its row in the report with the reason.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tokenmill.bench.benchmarks_doc import (
    machine_description,
    side_by_side,
    write_benchmarks_doc,
)
from tokenmill.bench.hf_baseline import HFStaticBatcher
from tokenmill.bench.load import LoadLevel
from tokenmill.bench.peers import (
    LLAMA_CPP_VERSION,
    PeerUnavailable,
    ServerProcess,
    ServerSpec,
    ensure_llama_server,
    llama_server_spec,
    tokenmill_spec,
)
from tokenmill.bench.report import RunReport, write_json
from tokenmill.bench.serve import MeasureConfig, WorkloadConfig, machine_load, measure
from tokenmill.bench.tokenizer import HFTokenizer, smollm2_gguf_path
from tokenmill.bench.workload import Workload

PEERS = ("tokenmill", "llama-server", "transformers")
CTX_MARGIN = 64
CTX_ROUND = 256


@dataclass(frozen=True)
class CompareConfig:
    """What `bench compare` runs and where it writes."""

    concurrency: tuple[int, ...] = (1, 8, 32, 64)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    peers: tuple[str, ...] = PEERS
    out: Path = Path("docs/benchmarks.md")
    """The markdown report; the PNG plot and the JSON results are written beside it."""
    llama_server: Path | None = None
    """An existing llama-server binary; None builds (or reuses) one in the cache."""
    llama_version: str = LLAMA_CPP_VERSION
    threads: int = 2
    """Threads for llama-server and for transformers."""
    tokenmill_args: tuple[str, ...] = ()
    """Extra arguments for `tokenmill serve`."""
    startup_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if not self.concurrency or min(self.concurrency) < 1:
            raise ValueError("--concurrency needs at least one level, each at least 1.")
        unknown = set(self.peers) - set(PEERS)
        if unknown:
            raise ValueError(f"unknown peers {sorted(unknown)}; choose from {PEERS}.")

    @property
    def levels(self) -> list[LoadLevel]:
        """The concurrency levels, in the order given."""
        return [LoadLevel(concurrency=c) for c in self.concurrency]

    @property
    def log_dir(self) -> Path:
        """Where server and build logs go: .bench/logs under the working directory
        (git-ignored in this repository)."""
        return Path(".bench") / "logs"


def _measure_server(spec: ServerSpec, workload: Workload, cfg: CompareConfig) -> RunReport:
    print(f"{spec.name}: starting: {' '.join(spec.argv)}", flush=True)
    t0 = time.monotonic()
    with ServerProcess(spec, cfg.log_dir) as server:
        print(
            f"{spec.name}: ready at {server.spec.url} after {time.monotonic() - t0:.1f} s",
            flush=True,
        )
        report = asyncio.run(
            measure(spec.name, spec.url, workload, cfg.levels, cfg.workload, cfg.measure)
        )
    report.settings["command"] = " ".join(spec.argv)
    return report


def _run_llama_server(workload: Workload, cfg: CompareConfig) -> RunReport:
    binary = cfg.llama_server or ensure_llama_server(cfg.llama_version, cfg.log_dir)
    longest = max(r.prompt_len + r.output_len for r in workload.requests) + CTX_MARGIN
    ctx_per_slot = -(-longest // CTX_ROUND) * CTX_ROUND
    spec = llama_server_spec(
        binary,
        smollm2_gguf_path(),
        max(cfg.concurrency),
        ctx_per_slot,
        cfg.threads,
        cfg.startup_timeout_s,
    )
    return _measure_server(spec, workload, cfg)


def _run_tokenmill(workload: Workload, cfg: CompareConfig) -> RunReport:
    spec = tokenmill_spec(list(cfg.tokenmill_args), cfg.startup_timeout_s)
    return _measure_server(spec, workload, cfg)


def _run_transformers(workload: Workload, cfg: CompareConfig) -> RunReport:
    print("transformers: loading the model (static batching baseline)", flush=True)
    batcher = HFStaticBatcher(threads=cfg.threads)
    batcher.warm_up(workload.warm_up)
    settings = {
        "engine": "transformers generate, static batches, float32",
        "threads": cfg.threads,
        "load average before": machine_load(),
        **cfg.workload.describe(),
    }
    report = RunReport(name="transformers", settings=settings)
    for level, requests in zip(cfg.levels, workload.levels):
        assert level.concurrency is not None
        result = batcher.run_level(requests, level.concurrency, cfg.measure.slo)
        report.levels.append(result)
        m = result.metrics
        print(
            f"transformers batch {level.concurrency}: {m.output_throughput:.1f} output tok/s, "
            f"TTFT p50 {m.ttft.p50:.0f} ms",
            flush=True,
        )
    return report


RUNNERS = {
    "tokenmill": _run_tokenmill,
    "llama-server": _run_llama_server,
    "transformers": _run_transformers,
}


def run_compare(cfg: CompareConfig, command: str = "tokenmill bench compare") -> list[RunReport]:
    """Measure each peer in turn and write the report, plot and JSON. A peer that fails to
    build, start or warm up gets an empty report whose note says why. `command` is the
    command line quoted in the report."""
    started = time.strftime("%Y-%m-%d %H:%M")
    tokenizer = HFTokenizer()
    workload = cfg.workload.build(tokenizer, cfg.levels)
    sizes = "+".join(str(len(level)) for level in workload.levels)
    print(f"workload: 1 warm-up + {sizes} requests ({cfg.workload.describe()})", flush=True)
    reports = []
    for name in cfg.peers:
        try:
            reports.append(RUNNERS[name](workload, cfg))
        except (PeerUnavailable, RuntimeError, OSError) as exc:
            print(f"{name}: NOT MEASURED: {exc}", file=sys.stderr, flush=True)
            reports.append(RunReport(name=name, settings={}, note=f"not measured: {exc}"))
    context = {"started": started, "machine": machine_description(), "command": command}
    write_benchmarks_doc(reports, cfg, context)
    write_json(cfg.out.with_suffix(".json"), [r.to_dict() for r in reports])
    print(side_by_side(reports, cfg.concurrency), flush=True)
    return reports
