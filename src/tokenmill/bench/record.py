"""The record of a `bench compare` run: every repeat's figures and the load around it.

Everything the report shows is computed from this record, and the record round-trips
through JSON (docs/benchmarks.json), so a report can be rendered again from a saved run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from tokenmill.bench.cpu import CpuInfo
from tokenmill.bench.gate import GateConfig, LoadSample
from tokenmill.bench.metrics import BenchmarkMetrics
from tokenmill.bench.pinning import CorePlan
from tokenmill.bench.spread import Spread

THROUGHPUT = "throughput"
"""Suite of closed-loop levels, keyed by concurrency."""
TTFT = "ttft"
"""Suite of single-stream levels, keyed by prompt length."""


@dataclass(frozen=True)
class Sample:
    """One repeat of one level on one peer."""

    completed: int
    failed: int
    output_tok_s: float
    total_tok_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    tpot_p50_ms: float
    itl_p99_ms: float
    e2e_p50_ms: float
    mean_prompt_tokens: float
    rss_peak_bytes: int
    """Peak resident memory of the peer's process tree while the repeat ran."""
    clean: bool
    """Whether the busy-machine gate let it count."""
    attempts: int
    load_before: LoadSample
    load_during: LoadSample
    errors: list[str] = field(default_factory=list)
    strays: list[str] = field(default_factory=list)
    """Peer threads found outside their CPUs after the repeat (then re-pinned)."""

    @classmethod
    def of(
        cls,
        m: BenchmarkMetrics,
        rss_peak_bytes: int,
        clean: bool,
        attempts: int,
        load: tuple[LoadSample, LoadSample],
        strays: list[str] | None = None,
    ) -> Sample:
        """The kept figures of a level's metrics."""
        return cls(
            completed=m.completed,
            failed=m.failed,
            output_tok_s=m.output_throughput,
            total_tok_s=m.total_token_throughput,
            ttft_p50_ms=m.ttft.p50,
            ttft_p99_ms=m.ttft.p99,
            tpot_p50_ms=m.tpot.p50,
            itl_p99_ms=m.itl.p99,
            e2e_p50_ms=m.e2e.p50,
            mean_prompt_tokens=m.total_input_tokens / m.completed if m.completed else 0.0,
            rss_peak_bytes=rss_peak_bytes,
            clean=clean,
            attempts=attempts,
            load_before=load[0],
            load_during=load[1],
            errors=list(m.errors),
            strays=list(strays or []),
        )

    @classmethod
    def from_dict(cls, d: dict) -> Sample:
        """The inverse of asdict."""
        d = dict(d)
        d["load_before"] = LoadSample(**d["load_before"])
        d["load_during"] = LoadSample(**d["load_during"])
        return cls(**d)


@dataclass
class LevelRecord:
    """The repeats of one level (a concurrency, or a prompt length) on one peer."""

    suite: str
    key: int
    samples: list[Sample] = field(default_factory=list)

    @property
    def counted(self) -> list[Sample]:
        """The repeats that count: those the gate passed."""
        return [s for s in self.samples if s.clean]

    def spread(self, figure: str) -> Spread | None:
        """Median and range of `figure` (a Sample field) over the counted repeats."""
        return Spread.of([float(getattr(s, figure)) for s in self.counted])


@dataclass
class PeerRecord:
    """One peer (a server, or the transformers baseline) under one core plan."""

    name: str
    kind: str
    """"tokenmill", "llama-server" or "transformers"."""
    settings: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    """Per suite: why the peer did not run it, or stopped (exit status and log tail)."""
    levels: list[LevelRecord] = field(default_factory=list)

    def level(self, suite: str, key: int) -> LevelRecord | None:
        """The level `key` of `suite`, if it was run."""
        for lv in self.levels:
            if lv.suite == suite and lv.key == key:
                return lv
        return None

    def level_for(self, suite: str, key: int) -> LevelRecord:
        """The level, created empty on first use."""
        lv = self.level(suite, key)
        if lv is None:
            lv = LevelRecord(suite, key)
            self.levels.append(lv)
        return lv


@dataclass
class PlanRecord:
    """Every peer under one core plan, and the machine's ceiling for that plan."""

    plan: CorePlan
    bandwidth_gbs: float | None = None
    """Memory read bandwidth measured with the plan's threads on its peer CPUs."""
    bandwidth_note: str = ""
    peers: list[PeerRecord] = field(default_factory=list)

    def peer(self, name: str) -> PeerRecord | None:
        """The peer called `name`, if it is in this plan."""
        return next((p for p in self.peers if p.name == name), None)


@dataclass(frozen=True)
class WeightsRead:
    """What one batch-1 decode step of a tokenmill configuration reads from memory."""

    bytes: int
    description: str
    """How the weights are held, e.g. "bfloat16 (tied head read once)"."""


@dataclass
class CompareRecord:
    """A whole comparison: machine, workloads, gate, and every plan's peers."""

    command: str
    started: str
    cpu: CpuInfo
    repeats: int
    workload: dict
    """The throughput suite's workload, as WorkloadConfig.describe() gives it."""
    ttft_workload: dict
    gate: GateConfig
    weights: dict[str, WeightsRead] = field(default_factory=dict)
    """Per tokenmill peer name."""
    plans: list[PlanRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def plan(self, name: str) -> PlanRecord | None:
        """The plan called `name`, if it was run."""
        return next((p for p in self.plans if p.plan.name == name), None)

    def exclude(self, plan: str, peer: str, suite: str, key: int, repeat: int, why: str) -> None:
        """Stop counting repeat `repeat` (from 1) of level `key` of `suite` on `peer`, for
        `why`, found after the run: the sample keeps its figures and says why in its
        errors, and the record's notes say it was corrected. Raises LookupError naming
        what is not in the record."""
        plan_rec = self.plan(plan)
        peer_rec = plan_rec.peer(peer) if plan_rec else None
        level = peer_rec.level(suite, key) if peer_rec else None
        if level is None or not 1 <= repeat <= len(level.samples):
            raise LookupError(
                f"no repeat {repeat} of {suite} {key} for {peer!r} under plan {plan!r} "
                "in this record."
            )
        sample = level.samples[repeat - 1]
        level.samples[repeat - 1] = replace(
            sample, clean=False, errors=[*sample.errors, f"not counted: {why}"]
        )
        self.notes.append(
            f"Corrected after the run: repeat {repeat} of {peer}'s {suite} {key} "
            f"({sample.output_tok_s:.1f} output tok/s, TTFT p50 {sample.ttft_p50_ms:.0f} ms) "
            f"no longer counts: {why}"
        )

    def to_dict(self) -> dict:
        """JSON-ready."""
        d = asdict(self)
        d["cpu"] = self.cpu.to_dict()
        d["plans"] = [{**asdict(p), "plan": p.plan.to_dict()} for p in self.plans]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CompareRecord:
        """The inverse of to_dict."""
        plans = []
        for p in d["plans"]:
            peers = [
                PeerRecord(
                    name=x["name"],
                    kind=x["kind"],
                    settings=x["settings"],
                    failures=x["failures"],
                    levels=[
                        LevelRecord(
                            lv["suite"], lv["key"], [Sample.from_dict(s) for s in lv["samples"]]
                        )
                        for lv in x["levels"]
                    ],
                )
                for x in p["peers"]
            ]
            plans.append(
                PlanRecord(
                    CorePlan.from_dict(p["plan"]), p["bandwidth_gbs"], p["bandwidth_note"], peers
                )
            )
        return cls(
            command=d["command"],
            started=d["started"],
            cpu=CpuInfo.from_dict(d["cpu"]),
            repeats=d["repeats"],
            workload=d["workload"],
            ttft_workload=d["ttft_workload"],
            gate=GateConfig(**d["gate"]),
            weights={k: WeightsRead(**v) for k, v in d["weights"].items()},
            plans=plans,
            notes=list(d["notes"]),
        )
