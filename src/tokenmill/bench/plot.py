"""The comparison plot: output throughput and p50 TTFT against concurrency, one line a peer."""

from __future__ import annotations

from pathlib import Path

from tokenmill.bench.report import RunReport


def plot_comparison(reports: list[RunReport], concurrency: tuple[int, ...], path: Path) -> str:
    """Draw the two panels into `path` (PNG). Returns "" on success, else why no plot was
    drawn (matplotlib missing), so the report can say so instead of linking a missing file."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (`.venv/bin/pip install matplotlib`)."
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in reports:
        points = sorted(
            ((lv.level.concurrency, lv.metrics) for lv in r.levels if lv.metrics.completed),
            key=lambda point: point[0] or 0,
        )
        if not points:
            continue
        xs = [c for c, _ in points]
        left.plot(xs, [m.output_throughput for _, m in points], marker="o", label=r.name)
        right.plot(xs, [m.ttft.p50 / 1000 for _, m in points], marker="o", label=r.name)
    for ax, title, ylabel in (
        (left, "Output throughput", "output tokens/s"),
        (right, "Time to first token (p50)", "seconds"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(concurrency), [str(c) for c in concurrency])
        ax.set_xlabel("concurrent streams (transformers: static batch size)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
    left.set_ylim(bottom=0)
    right.set_yscale("log")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return ""
