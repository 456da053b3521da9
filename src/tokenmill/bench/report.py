"""Benchmark reports: the JSON record of a run and its markdown tables."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tokenmill.bench.load import LevelResult
from tokenmill.files import write_text_atomically

LATENCIES = ("ttft", "tpot", "itl", "e2e")


@dataclass
class RunReport:
    """One server measured at one or more load levels under one workload."""

    name: str
    """Who was measured: "tokenmill", "llama-server", or the URL for `bench serve`."""
    settings: dict
    """The workload and client settings, echoed so a figure can be reproduced."""
    levels: list[LevelResult] = field(default_factory=list)
    note: str = ""
    """Why there are no levels (a peer that could not be built or started), or a caveat."""

    def to_dict(self) -> dict:
        """A JSON-ready dict: settings, note and each level's label and metrics."""
        return {
            "name": self.name,
            "settings": self.settings,
            "note": self.note,
            "levels": [
                {
                    "concurrency": lv.level.concurrency,
                    "request_rate": _json_rate(lv.level.request_rate),
                    "metrics": lv.metrics.to_dict(),
                }
                for lv in self.levels
            ],
        }

    def write_json(self, path: Path | str) -> None:
        """Write `to_dict()` to `path`, creating its folder."""
        write_json(path, self.to_dict())


def write_text(path: Path | str, text: str) -> None:
    """Write `text` to `path`, creating its folder; the file is replaced atomically, so a
    reader never sees half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, text)


def write_json(path: Path | str, data: dict | list) -> None:
    """Write `data` as indented JSON to `path` (write_text)."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def _json_rate(rate: float | None) -> float | str | None:
    return "inf" if rate is not None and rate == float("inf") else rate


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary_table(report: RunReport) -> str:
    """One row per level: counts, throughputs, goodput and p50/p99 latencies (ms)."""
    header = (
        "| load | ok | failed | req/s | output tok/s | total tok/s | goodput req/s "
        "| TTFT p50 | TTFT p99 | TPOT p50 | TPOT p99 | ITL p50 | ITL p99 | E2E p50 | E2E p99 |"
    )
    rows = [header, "|" + "---|" * 15]
    for lv in report.levels:
        m = lv.metrics
        rows.append(
            f"| {lv.level.label} | {m.completed} | {m.failed} | {_num(m.request_throughput, 2)} "
            f"| {_num(m.output_throughput)} | {_num(m.total_token_throughput)} "
            f"| {_num(m.goodput, 2)} | {_num(m.ttft.p50, 0)} | {_num(m.ttft.p99, 0)} "
            f"| {_num(m.tpot.p50)} | {_num(m.tpot.p99)} | {_num(m.itl.p50)} | {_num(m.itl.p99)} "
            f"| {_num(m.e2e.p50, 0)} | {_num(m.e2e.p99, 0)} |"
        )
    return "\n".join(rows)


def latency_table(report: RunReport) -> str:
    """One row per level and latency: mean, p50, p90, p99 in milliseconds."""
    rows = ["| load | metric | mean | p50 | p90 | p99 |", "|---|---|---|---|---|---|"]
    for lv in report.levels:
        for name in LATENCIES:
            s = getattr(lv.metrics, name)
            rows.append(
                f"| {lv.level.label} | {name.upper()} ms | {_num(s.mean)} | {_num(s.p50)} "
                f"| {_num(s.p90)} | {_num(s.p99)} |"
            )
    return "\n".join(rows)


def failures(report: RunReport) -> str:
    """Distinct failure messages per level, as markdown bullets; "" when none failed."""
    lines = []
    for lv in report.levels:
        for err in lv.metrics.errors:
            lines.append(f"- {lv.level.label}: {err}")
    return "\n".join(lines)


def to_markdown(report: RunReport) -> str:
    """The full markdown report of one run."""
    parts = [f"## {report.name}", ""]
    settings = ", ".join(f"{k}={v}" for k, v in report.settings.items())
    parts += [f"Settings: {settings}", ""]
    if report.note:
        head, _, rest = report.note.partition("\n")
        parts += [f"Note: {head}", ""]
        if rest.strip():
            parts += ["```", rest.strip(), "```", ""]
    if report.levels:
        parts += [summary_table(report), "", latency_table(report), ""]
    errs = failures(report)
    if errs:
        parts += ["Failures:", "", errs, ""]
    return "\n".join(parts)
