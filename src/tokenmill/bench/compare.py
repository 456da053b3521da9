"""`tokenmill bench compare`: tokenmill and its peers on the same CPU, the same requests.

For each core plan (pinning.py) and suite (suites.py), every peer is started pinned to the
plan's CPUs with the plan's thread count, and the load generator stays on its own core.
Each level runs `repeats` times, peers interleaved (A, B, C, A, B, C, ...) so a slow drift
of the machine touches all of them alike; every run passes the busy-machine gate (gate.py)
or is marked busy and left out. A peer that cannot be built or started, or dies, keeps its
row with the reason and exit status. The result is a CompareRecord, saved as JSON and
rendered by benchmarks_doc.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from tokenmill.bench import cpu as cpuinfo
from tokenmill.bench import pinning
from tokenmill.bench.bandwidth import measure_bandwidth
from tokenmill.bench.benchmarks_doc import write_benchmarks_doc
from tokenmill.bench.gate import Gate, GateConfig
from tokenmill.bench.lineup import (
    LLAMA,
    TOKENMILL,
    TRANSFORMERS,
    Peer,
    PeerDef,
    StartContext,
    start,
)
from tokenmill.bench.llama import LLAMA_CPP_VERSION, ensure_llama_server, given_binary
from tokenmill.bench.peers import PeerUnavailable, describe_exit
from tokenmill.bench.pinning import CorePlan
from tokenmill.bench.record import THROUGHPUT, TTFT, CompareRecord, PeerRecord, PlanRecord, Sample
from tokenmill.bench.report import write_json
from tokenmill.bench.rss import PeakRss
from tokenmill.bench.serve import MeasureConfig, WorkloadConfig
from tokenmill.bench.suites import Suite, throughput_suite, ttft_suite
from tokenmill.bench.tokenizer import HFTokenizer, smollm2_gguf_path
from tokenmill.bench.weights import measure_weights

PEERS = (TOKENMILL, LLAMA, TRANSFORMERS)
SUITES = (THROUGHPUT, TTFT)


@dataclass(frozen=True)
class CompareConfig:
    """What `bench compare` runs and where it writes."""

    concurrency: tuple[int, ...] = (1, 8, 32, 64, 128)
    prompt_lens: tuple[int, ...] = (128, 512, 2048, 8176)
    """The ttft suite's prompt lengths; 8176 + 16 output tokens fill the model's 8k context."""
    ttft_requests: int = 3
    """Prompts per repeat of each ttft level."""
    ttft_output_len: int = 16
    repeats: int = 3
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    peers: tuple[str, ...] = PEERS
    variants: tuple[tuple[str, tuple[str, ...]], ...] = (("int8", ("--quantization", "int8")),)
    """Opt-in tokenmill rows: (suffix, extra `tokenmill serve` arguments)."""
    plans: tuple[str, ...] = pinning.PLANS
    suites: tuple[str, ...] = SUITES
    gate: GateConfig = field(default_factory=GateConfig)
    out: Path = Path("docs/benchmarks.md")
    """The markdown report; the PNG plot and the JSON record are written beside it."""
    llama_server: Path | None = None
    """An existing llama-server binary; None builds (or reuses) one in the cache."""
    llama_version: str = LLAMA_CPP_VERSION
    startup_timeout_s: float = 900.0
    """tokenmill compiles its C++ kernels at first start: minutes on one pinned core."""

    def __post_init__(self) -> None:
        if not self.concurrency or min(self.concurrency) < 1:
            raise ValueError("--concurrency needs at least one level, each at least 1.")
        if not self.prompt_lens or min(self.prompt_lens) < 1:
            raise ValueError("--prompt-lens needs at least one length, each at least 1.")
        if self.repeats < 1 or self.ttft_requests < 1 or self.ttft_output_len < 1:
            raise ValueError("--repeats, --ttft-requests and --ttft-output-len must be >= 1.")
        if self.measure.endpoint != "completions" or not self.measure.ignore_eos:
            raise ValueError(
                "bench compare streams /v1/completions with ignore_eos, so every peer "
                "(transformers included) gets the same raw prompt and output length; drop "
                "--endpoint chat and --no-ignore-eos."
            )
        if self.workload.dataset != "random":
            raise ValueError("bench compare uses random prompts; drop --dataset sharegpt.")
        for name, known in (("peers", PEERS), ("plans", pinning.PLANS), ("suites", SUITES)):
            unknown = set(getattr(self, name)) - set(known)
            if unknown:
                raise ValueError(f"unknown {name} {sorted(unknown)}; choose from {known}.")

    @property
    def lineup(self) -> list[PeerDef]:
        """The rows: tokenmill's defaults first, its variants, then the other peers."""
        rows = []
        for kind in self.peers:
            if kind == TOKENMILL:
                rows.append(PeerDef(TOKENMILL, TOKENMILL))
                rows += [PeerDef(f"{TOKENMILL} {n}", TOKENMILL, a) for n, a in self.variants]
            else:
                rows.append(PeerDef(kind, kind))
        return rows

    @property
    def log_dir(self) -> Path:
        """Server and build logs: .bench/logs under the working directory (git-ignored)."""
        return Path(".bench") / "logs"


def _llama(cfg: CompareConfig, cpu: cpuinfo.CpuInfo, cpus: tuple[int, ...], rec: CompareRecord):
    """(the llama-server binary, "") or (None, why there is none); notes which build."""
    gguf = smollm2_gguf_path()
    try:
        if cfg.llama_server is not None:
            found = given_binary(cfg.llama_server, gguf, cfg.log_dir, cpus)
        else:
            found = ensure_llama_server(cpu, gguf, cfg.log_dir, cfg.llama_version, cpus)
    except PeerUnavailable as exc:
        print(f"llama-server: NOT AVAILABLE: {exc}", flush=True)
        return None, f"no working llama-server: {exc}"
    after = f" (after: {'; '.join(found.history)})" if found.history else ""
    rec.notes.append(f"llama-server: {found.build} build {found.path}{after}.")
    return found.path, ""


def _weights(cfg: CompareConfig, rec: CompareRecord) -> None:
    """What a decode step reads, for each tokenmill row (the bandwidth bound's divisor)."""
    for defn in cfg.lineup:
        if defn.kind != TOKENMILL:
            continue
        try:
            w = measure_weights(list(defn.args))
        except (RuntimeError, OSError) as exc:
            rec.notes.append(f"{defn.name}: weights read per step unknown: {exc}")
            continue
        rec.weights[defn.name] = w
        print(f"{defn.name}: a decode step reads {w.bytes / 1e6:.1f} MB ({w.description})")


def _bandwidth(plan: CorePlan, gate: Gate) -> PlanRecord:
    """A plan's record, opened with its memory read bandwidth (None unless measured on a
    quiet machine)."""
    gated = gate.run(list, plan.client_cpus + plan.peer_cpus,
                     lambda: measure_bandwidth(plan.peer_cpus, plan.threads))  # fmt: skip
    busy = "" if gated.clean else " (busy: not used)"
    note = f"{gated.result:.1f} GB/s, {gated.during.describe()}{busy}"
    print(f"[{plan.name}] memory read bandwidth: {note}", flush=True)
    return PlanRecord(plan, gated.result if gated.clean else None, note)


def _suites(cfg: CompareConfig) -> list[Suite]:
    print("building the workloads ...", flush=True)
    tokenizer = HFTokenizer()
    suites = []
    if THROUGHPUT in cfg.suites:
        suites.append(throughput_suite(tokenizer, cfg.workload, cfg.concurrency, cfg.repeats))
    if TTFT in cfg.suites:
        suites.append(ttft_suite(tokenizer, cfg.prompt_lens, cfg.ttft_requests,
                                 cfg.ttft_output_len, cfg.repeats, cfg.workload.seed))  # fmt: skip
    return suites


def _start_all(
    suite: Suite,
    plan_rec: PlanRecord,
    cfg: CompareConfig,
    ctx: StartContext,
    llama_failure: str,
    stack: contextlib.ExitStack,
) -> list[tuple[Peer, PeerRecord]]:
    """Start and warm up every peer under the plan; each stays up until `stack` closes. A
    peer that cannot start gets the reason in its record (and is stopped, if it started)."""
    plan = plan_rec.plan
    running = []
    for defn in cfg.lineup:
        rec = plan_rec.peer(defn.name)
        if rec is None:
            rec = PeerRecord(defn.name, defn.kind)
            plan_rec.peers.append(rec)
        if defn.kind == LLAMA and llama_failure:
            rec.failures[suite.name] = llama_failure
            continue
        own = contextlib.ExitStack()
        try:
            print(f"[{plan.name}] {suite.name}: starting {defn.name}", flush=True)
            peer = own.enter_context(start(defn, plan, ctx))
            peer.warm_up(suite.warm_up)
            pinning.enforce(peer.pid, plan.peer_cpus)
        except (PeerUnavailable, RuntimeError, OSError) as exc:
            own.close()
            print(f"[{plan.name}] {defn.name}: NOT MEASURED: {exc}", flush=True)
            rec.failures[suite.name] = f"failed to start: {exc}"
            continue
        stack.enter_context(own)
        for key, value in peer.settings.items():
            # A suite may start a peer differently (llama-server's --parallel follows the
            # concurrency): keep each distinct command, not only the last one.
            if key == "command" and rec.settings.get(key, value) != value:
                key = f"command ({suite.name})"
            rec.settings[key] = value
        running.append((peer, rec))
    return running


def _run_once(
    peer: Peer, rec: PeerRecord, suite: Suite, key: int, rep: int, plan: CorePlan,
    cfg: CompareConfig, gate: Gate,
) -> None:  # fmt: skip
    """One repeat of level `key` on `peer` through the gate: appends its Sample to `rec`,
    or records why the peer failed."""

    def measure():
        with PeakRss(peer.pid) as rss:
            metrics = peer.run(
                suite.requests[(key, rep)],
                suite.concurrency(key),
                cfg.measure.max_level_s,
                cfg.measure.slo,
            )
        return metrics, rss.peak

    where = f"{suite.name} {key}, repeat {rep + 1}"
    try:
        gated = gate.run(lambda: [peer.pid], plan.client_cpus + plan.peer_cpus, measure)
    except PeerUnavailable as exc:
        rec.failures[suite.name] = f"died at {where}: {exc}"
        return
    code = peer.poll()
    if code is not None:
        rec.failures[suite.name] = f"exited with {describe_exit(code)} at {where}"
    metrics, peak = gated.result
    strays = pinning.enforce(peer.pid, plan.peer_cpus) if code is None else []
    sample = Sample.of(
        metrics, peak, gated.clean, gated.attempts, (gated.before, gated.during), strays
    )
    rec.level_for(suite.name, key).samples.append(sample)
    print(
        f"[{plan.name}] {where} {rec.name}: {sample.output_tok_s:.1f} output tok/s, "
        f"TTFT p50 {sample.ttft_p50_ms:.0f} ms, RSS {peak / 1e6:.0f} MB, "
        f"{'clean' if gated.clean else 'BUSY'} ({gated.during.describe()})",
        flush=True,
    )


def _run_suite(
    suite: Suite,
    plan_rec: PlanRecord,
    cfg: CompareConfig,
    ctx: StartContext,
    gate: Gate,
    llama_failure: str,
) -> None:
    """Every level of `suite`, `repeats` times, peers interleaved within each repeat."""
    with contextlib.ExitStack() as stack:
        running = _start_all(suite, plan_rec, cfg, ctx, llama_failure, stack)
        for key in suite.keys:
            for rep in range(cfg.repeats):
                for peer, rec in running:
                    if suite.name not in rec.failures:
                        _run_once(peer, rec, suite, key, rep, plan_rec.plan, cfg, gate)


def run_compare(cfg: CompareConfig, command: str = "tokenmill bench compare") -> CompareRecord:
    """Measure every peer under every plan and write the report, plot and JSON record."""
    cpu = cpuinfo.detect()
    plans = pinning.plans(cpu, cfg.plans)
    print(f"CPU: {cpu.model}; {cpu.flag_summary()}", flush=True)
    suites = _suites(cfg)
    empty = {"dataset": "not run"}
    record = CompareRecord(
        command=command,
        started=time.strftime("%Y-%m-%d %H:%M"),
        cpu=cpu,
        repeats=cfg.repeats,
        workload=next((s.description for s in suites if s.name == THROUGHPUT), empty),
        ttft_workload=next((s.description for s in suites if s.name == TTFT), empty),
        gate=cfg.gate,
    )
    if len(plans) < len(cfg.plans):
        record.notes.append("All cores but the client's is the single core here: run once.")
    _weights(cfg, record)
    llama_binary, llama_failure = None, ""
    if LLAMA in cfg.peers:
        llama_binary, llama_failure = _llama(cfg, cpu, plans[0].peer_cpus, record)
    # Only now: a llama.cpp build above may use every core.
    pinning.pin(os.getpid(), plans[0].client_cpus)
    gate = Gate(cfg.gate)
    for plan in plans:
        print(f"[{plan.name}] {plan.title}", flush=True)
        plan_rec = _bandwidth(plan, gate)
        record.plans.append(plan_rec)
        for suite in suites:
            ctx = StartContext(
                gguf=smollm2_gguf_path(),
                log_dir=cfg.log_dir,
                llama_binary=llama_binary,
                transformers_dtype=cpu.best_torch_dtype,
                startup_timeout_s=cfg.startup_timeout_s,
                max_concurrency=suite.max_concurrency,
                max_tokens_per_request=suite.max_tokens_per_request,
            )
            _run_suite(suite, plan_rec, cfg, ctx, gate, llama_failure)
    write_json(cfg.out.with_suffix(".json"), record.to_dict())
    write_benchmarks_doc(record, cfg.out)
    return record
