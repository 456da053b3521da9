"""tokenmill's performance targets (issue 15, part 5): one declared table, and its verdicts.

Targets judge the headline row (tokenmill with its defaults) under the "single" plan
(every peer on the same core with one thread), on the workload they were set for: random
100-token prompts and 128 output tokens. A verdict is "yes" or "no" from the medians of
the counted repeats. When a figure is missing it is "peer failed" if that side failed in
the figure's suite (the reason is kept), else "not measured" (a level not run, or no
repeat passed the busy-machine gate).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

from tokenmill.bench.pinning import SINGLE
from tokenmill.bench.record import THROUGHPUT, TTFT, CompareRecord, PeerRecord, PlanRecord
from tokenmill.bench.spread import Spread

HEADLINE = "tokenmill"
"""The peer name of tokenmill with its defaults: the row the targets judge."""
TARGET_WORKLOAD = {"dataset": "random", "input_len": 100, "output_len": 128}
YES, NO, PEER_FAILED, NOT_MEASURED = "yes", "no", "peer failed", "not measured"

Reader = Callable[[CompareRecord, PlanRecord, PeerRecord], tuple[Spread | None, str]]
"""Reads one figure of one peer: (median and range over counted repeats, a note)."""


def _per_sample(level, value: Callable) -> Spread | None:
    if level is None:
        return None
    values = [v for v in (value(s) for s in level.counted) if v is not None]
    return Spread.of(values)


def output_tok_s(concurrency: int) -> Reader:
    """Output tokens per second at a closed-loop concurrency."""

    def read(rec: CompareRecord, plan: PlanRecord, peer: PeerRecord):
        lv = peer.level(THROUGHPUT, concurrency)
        return (lv.spread("output_tok_s") if lv else None), ""

    return read


def ttft_p50_s(concurrency: int) -> Reader:
    """Median time to first token, seconds."""

    def read(rec: CompareRecord, plan: PlanRecord, peer: PeerRecord):
        lv = peer.level(THROUGHPUT, concurrency)
        s = lv.spread("ttft_p50_ms") if lv else None
        return (s.scaled(1e-3) if s else None), ""

    return read


def prefill_tok_s(prompt_len: int) -> Reader:
    """Prompt tokens per second of one stream: prompt length over TTFT p50."""

    def read(rec: CompareRecord, plan: PlanRecord, peer: PeerRecord):
        lv = peer.level(TTFT, prompt_len)
        value = _per_sample(
            lv,
            lambda s: s.mean_prompt_tokens / (s.ttft_p50_ms / 1e3) if s.ttft_p50_ms > 0 else None,
        )
        return value, ""

    return read


def rss_gb(concurrency: int) -> Reader:
    """Peak resident memory of the peer's processes at a concurrency, GB (1e9 bytes)."""

    def read(rec: CompareRecord, plan: PlanRecord, peer: PeerRecord):
        lv = peer.level(THROUGHPUT, concurrency)
        s = lv.spread("rss_peak_bytes") if lv else None
        return (s.scaled(1e-9) if s else None), ""

    return read


def decode_bandwidth_fraction(rec: CompareRecord, plan: PlanRecord, peer: PeerRecord):
    """Batch-1 decode rate (1 / TPOT p50 at concurrency 1) over the memory-bandwidth bound:
    the plan's measured read bandwidth divided by the bytes one step reads."""
    weights = rec.weights.get(peer.name)
    if weights is None or not plan.bandwidth_gbs:
        why = "weights read unknown" if weights is None else "bandwidth not measured"
        return None, why
    bound = plan.bandwidth_gbs * 1e9 / weights.bytes
    lv = peer.level(THROUGHPUT, 1)
    value = _per_sample(lv, lambda s: 1e3 / s.tpot_p50_ms / bound if s.tpot_p50_ms > 0 else None)
    note = (
        f"bound {bound:.0f} tok/s = {plan.bandwidth_gbs:.1f} GB/s / "
        f"{weights.bytes / 1e6:.1f} MB a step ({weights.description})"
    )
    return value, note


@dataclass(frozen=True)
class Target:
    """One row of the targets table."""

    figure: str
    read: Reader
    op: str
    """">=" or "<="."""
    threshold: float
    versus: str | None = None
    """A peer name: the threshold is a ratio to that peer's figure. None: absolute."""
    unit: str = ""
    suite: str = THROUGHPUT
    """The suite the figure comes from (whose failures explain a missing figure)."""
    digits: int = 1
    """Decimals when the figure is shown."""

    def __post_init__(self) -> None:
        if self.op not in (">=", "<="):
            raise ValueError(f"op must be >= or <=, got {self.op!r}.")

    @property
    def wanted(self) -> str:
        """ ">= 1.5x llama-server", "<= 0.1 s"."""
        if self.versus:
            return f"{self.op} {self.threshold:g}x {self.versus}"
        return f"{self.op} {self.threshold:g}{(' ' + self.unit) if self.unit else ''}"


TARGETS: tuple[Target, ...] = (
    Target("output tok/s at concurrency 1", output_tok_s(1), ">=", 1.5, "llama-server"),
    Target("output tok/s at concurrency 32", output_tok_s(32), ">=", 3.0, "llama-server"),
    Target("output tok/s at concurrency 64", output_tok_s(64), ">=", 4.0, "llama-server"),
    Target("output tok/s at concurrency 1", output_tok_s(1), ">=", 4.0, "transformers"),
    Target("output tok/s at concurrency 32", output_tok_s(32), ">=", 2.0, "transformers"),
    Target(
        "prefill tok/s, 512-token prompt",
        prefill_tok_s(512),
        ">=",
        2.0,
        "llama-server",
        suite=TTFT,
        digits=0,
    ),
    Target("TTFT p50, 1 stream, 100-token prompt", ttft_p50_s(1), "<=", 0.1, unit="s", digits=3),
    Target("server RSS at 64 streams", rss_gb(64), "<=", 1.0, unit="GB", digits=2),
    Target(
        "batch-1 decode, share of the memory-bandwidth bound",
        decode_bandwidth_fraction,
        ">=",
        0.5,
        digits=2,
    ),
)


@dataclass(frozen=True)
class Verdict:
    """A target judged against one run."""

    target: Target
    status: str
    """YES, NO, PEER_FAILED or NOT_MEASURED."""
    value: Spread | None = None
    """tokenmill's figure."""
    reference: Spread | None = None
    """The compared peer's figure (relative targets)."""
    note: str = ""


def _workload_mismatch(workload: dict) -> str:
    """Why the throughput suite's figures cannot judge the targets, or ""."""
    if workload.get("dataset") == "not run":
        return "the throughput suite was not run"
    differs = [
        f"{k} {workload.get(k)} (targets: {v})"
        for k, v in TARGET_WORKLOAD.items()
        if workload.get(k) != v
    ]
    return "the run's workload differs: " + ", ".join(differs) if differs else ""


def judge(target: Target, rec: CompareRecord, headline: str = HEADLINE) -> Verdict:
    """The verdict of `target` on `rec`'s single-core plan."""
    plan = rec.plan(SINGLE)
    if plan is None:
        return Verdict(target, NOT_MEASURED, note="the single-core plan was not run")
    if target.suite == THROUGHPUT:
        # A prefill target reads the TTFT suite, which a run can make on its own.
        mismatch = _workload_mismatch(rec.workload)
        if mismatch:
            return Verdict(target, NOT_MEASURED, note=mismatch)
    names = [headline] + ([target.versus] if target.versus else [])
    figures: list[Spread | None] = []
    notes: list[str] = []
    status = None
    for name in names:
        peer = plan.peer(name)
        if peer is None:
            figures.append(None)
            notes.append(f"{name} was not in the run")
            status = status or NOT_MEASURED
            continue
        value, note = target.read(rec, plan, peer)
        figures.append(value)
        if note and name == headline:
            notes.append(note)
        failure = peer.failures.get(target.suite, "")
        if failure:
            notes.append(f"{name}: {failure.splitlines()[0]}")
        if value is None:
            status = status or (PEER_FAILED if failure else NOT_MEASURED)
            if not failure:
                notes.append(f"no counted repeat of {name}")
    value = figures[0]
    reference = figures[1] if target.versus else None
    if status is None:
        assert value is not None
        compare = operator.ge if target.op == ">=" else operator.le
        bar = target.threshold * (reference.median if reference else 1.0)
        status = YES if compare(value.median, bar) else NO
    return Verdict(target, status, value, reference, "; ".join(notes))


def judge_all(rec: CompareRecord, headline: str = HEADLINE) -> list[Verdict]:
    """Every declared target's verdict, in table order."""
    return [judge(t, rec, headline) for t in TARGETS]
