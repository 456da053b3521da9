"""Markdown tables of a CompareRecord: one function per table, numbers only from the record.

A cell shows the median over the counted repeats with their range, "(n of N)" when some
repeats did not count, and "busy" or "failed" instead of a number when none did.
"""

from __future__ import annotations

from tokenmill.bench.record import THROUGHPUT, TTFT, CompareRecord, PeerRecord, PlanRecord
from tokenmill.bench.spread import Spread
from tokenmill.bench.targets import Verdict


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join([_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)])


def cell(
    peer: PeerRecord,
    suite: str,
    key: int,
    figure: str,
    repeats: int,
    digits: int = 1,
    scale: float = 1.0,
) -> str:
    """One figure of one level: "12.3 (11.9-12.8)", with why when it is missing."""
    lv = peer.level(suite, key)
    if lv is None or not lv.samples:
        return "failed" if suite in peer.failures else "-"
    spread = lv.spread(figure)
    if spread is None:
        return f"busy ({len(lv.samples)} runs)"
    text = spread.render(digits, scale)
    if spread.n < repeats:
        text += f" ({spread.n} of {repeats})"
    return text


def _spread_text(s: Spread | None, digits: int = 2) -> str:
    return "-" if s is None else s.render(digits)


def targets_table(verdicts: list[Verdict]) -> str:
    """The targets: figure, wanted, tokenmill's value, the peer's, the ratio, met or not."""
    rows = []
    for v in verdicts:
        t = v.target
        ratio = "-"
        if t.versus and v.value is not None and v.reference is not None and v.reference.median:
            ratio = f"{v.value.median / v.reference.median:.2f}x"
        rows.append(
            [
                t.figure,
                t.wanted,
                _spread_text(v.value, t.digits),
                _spread_text(v.reference, t.digits),
                ratio,
                f"**{v.status}**",
                v.note or "",
            ]
        )
    header = ["figure", "target", "tokenmill", "compared peer", "ratio", "met", "notes"]
    return _table(header, rows)


THROUGHPUT_COLUMNS = (
    ("output tok/s", "output_tok_s", 1, 1.0),
    ("total tok/s", "total_tok_s", 0, 1.0),
    ("TTFT p50 ms", "ttft_p50_ms", 0, 1.0),
    ("TPOT p50 ms", "tpot_p50_ms", 1, 1.0),
    ("ITL p99 ms", "itl_p99_ms", 1, 1.0),
    ("peak RSS MB", "rss_peak_bytes", 0, 1e-6),
)


def throughput_table(plan: PlanRecord, repeats: int) -> str:
    """Per concurrency and peer: throughput, latencies, memory, failed requests. A peer
    with no run of a level gets one "failed" (or "-") cell, not one per column."""
    keys = sorted({lv.key for p in plan.peers for lv in p.levels if lv.suite == THROUGHPUT})
    rows = []
    for c in keys:
        for p in plan.peers:
            lv = p.level(THROUGHPUT, c)
            if lv is None or not lv.samples:
                missing = "failed" if THROUGHPUT in p.failures else "-"
                rows.append([str(c), p.name, missing] + [""] * len(THROUGHPUT_COLUMNS))
                continue
            figures = [
                cell(p, THROUGHPUT, c, name, repeats, digits, scale)
                for _, name, digits, scale in THROUGHPUT_COLUMNS
            ]
            rows.append([str(c), p.name, *figures, str(sum(s.failed for s in lv.counted))])
    header = ["concurrency", "peer", *(t for t, *_ in THROUGHPUT_COLUMNS), "failed requests"]
    return _table(header, rows)


def scaling_table(plan: PlanRecord, figure: str, digits: int, scale: float = 1.0) -> str:
    """One row a peer, one column a concurrency: the median of `figure` (no ranges)."""
    keys = sorted({lv.key for p in plan.peers for lv in p.levels if lv.suite == THROUGHPUT})
    rows = []
    for p in plan.peers:
        cells = [p.name]
        for c in keys:
            lv = p.level(THROUGHPUT, c)
            s = lv.spread(figure) if lv else None
            cells.append("-" if s is None else f"{s.median * scale:.{digits}f}")
        rows.append(cells)
    return _table(["peer", *(f"c={c}" for c in keys)], rows)


def ttft_table(plan: PlanRecord, repeats: int) -> str:
    """Per prompt length and peer: TTFT p50 and the prefill rate it implies."""
    keys = sorted({lv.key for p in plan.peers for lv in p.levels if lv.suite == TTFT})
    rows = []
    for n in keys:
        for p in plan.peers:
            lv = p.level(TTFT, n)
            prefill = "-"
            if lv is not None and lv.counted:
                rates = [
                    s.mean_prompt_tokens / (s.ttft_p50_ms / 1e3)
                    for s in lv.counted
                    if s.ttft_p50_ms > 0
                ]
                prefill = _spread_text(Spread.of(rates), 0)
            rows.append([str(n), p.name, cell(p, TTFT, n, "ttft_p50_ms", repeats, 0), prefill])
    return _table(["prompt tokens", "peer", "TTFT p50 ms", "prefill tok/s"], rows)


def failures_list(plan: PlanRecord) -> str:
    """Each failure of each peer, as bullets; "" when none failed."""
    lines = []
    for p in plan.peers:
        for suite, why in p.failures.items():
            head, _, rest = why.partition("\n")
            lines.append(f"- **{p.name}** ({suite} suite): {head}")
            if rest.strip():
                lines += ["", "  ```", *("  " + x for x in rest.strip().splitlines()), "  ```"]
    return "\n".join(lines)


def runs_table(plan: PlanRecord) -> str:
    """Every repeat of every level: figures, attempts, whether it counted, and the load."""
    rows = []
    for p in plan.peers:
        for lv in p.levels:
            for i, s in enumerate(lv.samples, 1):
                rows.append(
                    [
                        p.name,
                        f"{lv.suite} {lv.key}",
                        str(i),
                        f"{s.output_tok_s:.1f}",
                        f"{s.ttft_p50_ms:.0f}",
                        f"{s.rss_peak_bytes / 1e6:.0f}",
                        f"{s.completed}/{s.completed + s.failed}",
                        str(s.attempts),
                        "yes" if s.clean else "**no, busy**",
                        s.load_before.describe(),
                        s.load_during.describe(),
                        "; ".join(s.strays) or "-",
                    ]
                )
    header = [
        "peer",
        "level",
        "repeat",
        "output tok/s",
        "TTFT p50 ms",
        "RSS MB",
        "ok",
        "attempts",
        "counted",
        "load before",
        "load during",
        "re-pinned threads",
    ]
    return _table(header, rows)


def settings_list(plan: PlanRecord) -> str:
    """Each peer's exact command and settings."""
    lines = []
    for p in plan.peers:
        if p.settings:
            detail = ", ".join(
                f"{k}: `{v}`" if k.startswith("command") else f"{k}: {v}"
                for k, v in p.settings.items()
            )
            lines.append(f"- **{p.name}**: {detail}")
    return "\n".join(lines)


def decode_bound_lines(rec: CompareRecord, plan: PlanRecord) -> str:
    """For each tokenmill row: bytes a decode step reads, the bound, and the measured rate."""
    bandwidth = plan.bandwidth_note or "not measured"
    lines = [
        f"- Memory read bandwidth, {plan.plan.threads} thread(s) on the peer CPUs: {bandwidth}."
    ]
    for p in plan.peers:
        w = rec.weights.get(p.name)
        if w is None:
            continue
        text = f"- {p.name}: a decode step reads {w.bytes / 1e6:.1f} MB ({w.description})"
        if plan.bandwidth_gbs:
            bound = plan.bandwidth_gbs * 1e9 / w.bytes
            text += f"; bound {bound:.0f} tok/s"
            lv = p.level(THROUGHPUT, 1)
            rates = [1e3 / s.tpot_p50_ms for s in lv.counted if s.tpot_p50_ms > 0] if lv else []
            got = Spread.of(rates)
            if got is not None:
                text += f"; measured {got.render(1)} tok/s, {100 * got.median / bound:.0f}% of it"
        lines.append(text + ".")
    return "\n".join(lines)
