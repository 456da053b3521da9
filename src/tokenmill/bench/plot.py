"""The comparison plot: output throughput and p50 TTFT against concurrency, one line a peer.

Drawn from one plan of a CompareRecord (the medians of the counted repeats).
"""

from __future__ import annotations

from pathlib import Path

from tokenmill.bench.record import THROUGHPUT, PlanRecord


def plot_comparison(plan: PlanRecord, path: Path) -> str:
    """Draw the two panels into `path` (PNG). Returns "" on success, else why no plot was
    drawn (matplotlib missing, nothing measured), so the report can say so instead of
    linking a missing file."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (`.venv/bin/pip install matplotlib`)."
    series = []
    for peer in plan.peers:
        points = []
        for lv in sorted((x for x in peer.levels if x.suite == THROUGHPUT), key=lambda x: x.key):
            tok, ttft = lv.spread("output_tok_s"), lv.spread("ttft_p50_ms")
            if tok is not None and ttft is not None:
                points.append((lv.key, tok.median, ttft.median / 1000))
        if points:
            series.append((peer.name, points))
    if not series:
        return "no peer has a counted throughput level."
    keys = sorted({k for _, pts in series for k, _, _ in pts})
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, pts in series:
        xs = [k for k, _, _ in pts]
        left.plot(xs, [t for _, t, _ in pts], marker="o", label=name)
        right.plot(xs, [s for _, _, s in pts], marker="o", label=name)
    for ax, title, ylabel in (
        (left, "Output throughput (median)", "output tokens/s"),
        (right, "Time to first token (p50, median)", "seconds"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_xticks(keys, [str(c) for c in keys])
        ax.set_xlabel("concurrent streams (transformers: static batch size)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
    left.set_ylim(bottom=0)
    right.set_yscale("log")
    fig.suptitle(plan.plan.title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return ""
