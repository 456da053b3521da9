"""Factories for comparison records: samples, levels, peers and whole runs, by hand."""

from __future__ import annotations

from tokenmill.bench.cpu import CpuInfo
from tokenmill.bench.gate import GateConfig, LoadSample
from tokenmill.bench.pinning import CorePlan
from tokenmill.bench.record import (
    THROUGHPUT,
    TTFT,
    CompareRecord,
    LevelRecord,
    PeerRecord,
    PlanRecord,
    Sample,
    WeightsRead,
)

QUIET = LoadSample(seconds=2.0, foreign_cores=0.01, steal=0.0, loadavg=1.0)
BUSY = LoadSample(seconds=30.0, foreign_cores=0.9, steal=0.0, loadavg=3.2)
ZEN3 = CpuInfo("AMD EPYC (test)", frozenset({"avx2", "fma", "f16c"}), (0, 1))
WORKLOAD = {"dataset": "random", "input_len": 100, "output_len": 128, "num_prompts": "auto",
            "seed": 0}  # fmt: skip
TTFT_WORKLOAD = {"dataset": "random", "prompt_lens": [512], "output_len": 16,
                 "requests_per_repeat": 3, "seed": 0}  # fmt: skip


def sample(
    output_tok_s: float = 50.0,
    ttft_ms: float = 80.0,
    tpot_ms: float = 20.0,
    rss: int = 800_000_000,
    clean: bool = True,
    prompt: float = 100.0,
    failed: int = 0,
) -> Sample:
    """One repeat with the figures the targets read; the rest plausible."""
    return Sample(
        completed=8,
        failed=failed,
        output_tok_s=output_tok_s,
        total_tok_s=output_tok_s * 1.8,
        ttft_p50_ms=ttft_ms,
        ttft_p99_ms=ttft_ms * 1.2,
        tpot_p50_ms=tpot_ms,
        itl_p99_ms=tpot_ms * 1.5,
        e2e_p50_ms=ttft_ms + 127 * tpot_ms,
        mean_prompt_tokens=prompt,
        rss_peak_bytes=rss,
        clean=clean,
        attempts=1 if clean else 3,
        load_before=QUIET if clean else BUSY,
        load_during=QUIET if clean else BUSY,
    )


def peer(name: str, kind: str | None = None, **levels: list[Sample]) -> PeerRecord:
    """A peer with throughput levels given as c1=[...], c32=[...] and ttft levels as
    p512=[...]."""
    rec = PeerRecord(name, kind or name.split()[0], settings={"command": f"run {name}"})
    for key, samples in levels.items():
        suite = THROUGHPUT if key.startswith("c") else TTFT
        rec.levels.append(LevelRecord(suite, int(key[1:]), list(samples)))
    return rec


def record(peers: list[PeerRecord], bandwidth_gbs: float | None = 10.0, **kw) -> CompareRecord:
    """A run on the single plan of a 2-core machine with `peers`."""
    plan = PlanRecord(CorePlan("single", (0,), (1,), 1), bandwidth_gbs, "10.0 GB/s", peers)
    return CompareRecord(
        command="tokenmill bench compare --test",
        started="2026-12-01 10:00",
        cpu=kw.pop("cpu", ZEN3),
        repeats=3,
        workload=kw.pop("workload", WORKLOAD),
        ttft_workload=TTFT_WORKLOAD,
        gate=GateConfig(),
        weights=kw.pop("weights", {"tokenmill": WeightsRead(100_000_000, "bfloat16 (test)")}),
        plans=[plan],
        notes=kw.pop("notes", []),
    )
