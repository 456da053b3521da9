"""docs/benchmarks.md: the comparison table, the physical limits, the targets, the plot."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tokenmill.bench.metrics import BenchmarkMetrics
from tokenmill.bench.plot import plot_comparison
from tokenmill.bench.report import RunReport, to_markdown
from tokenmill.bench.tokenizer import smollm2_gguf_path

if TYPE_CHECKING:
    from tokenmill.bench.compare import CompareConfig


@dataclass(frozen=True)
class MachineLimits:
    """The ceilings issue 4 measured for the 2-core CPU and SmolLM2-135M."""

    bandwidth_gbs: float = 31.0
    """Memory bandwidth, GB/s: every batch-1 decode step reads all weights once."""
    gemm_gflops: float = 335.0
    """bf16 GEMM throughput over both cores, GFLOP/s."""
    params: float = 134.5e6
    gflop_per_token: float = 0.27
    """About 2 x parameters."""

    @property
    def compute_ceiling(self) -> float:
        """Tokens per second (prompt plus output) if every token cost only its GEMMs."""
        return self.gemm_gflops / self.gflop_per_token

    def decode_bound(self, weight_bytes: float) -> float:
        """Batch-1 decode tokens per second when each step streams `weight_bytes`."""
        return self.bandwidth_gbs * 1e9 / weight_bytes


def machine_description() -> str:
    """The CPU model and core count, for the report's header."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def _level(report: RunReport, concurrency: int) -> BenchmarkMetrics | None:
    for lv in report.levels:
        if lv.level.concurrency == concurrency:
            return lv.metrics
    return None


def side_by_side(reports: list[RunReport], concurrency: tuple[int, ...]) -> str:
    """One row per concurrency and peer with the headline figures."""
    rows = [
        (
            "| concurrency | peer | output tok/s | total tok/s | TTFT p50 ms | TPOT p50 ms "
            "| ITL p99 ms | E2E p50 ms | ok | failed |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in concurrency:
        for r in reports:
            m = _level(r, c)
            if m is None:
                rows.append(f"| {c} | {r.name} | not measured | | | | | | | |")
                continue
            rows.append(
                f"| {c} | {r.name} | {m.output_throughput:.1f} | {m.total_token_throughput:.1f} "
                f"| {m.ttft.p50:.0f} | {m.tpot.p50:.1f} | {m.itl.p99:.1f} | {m.e2e.p50:.0f} "
                f"| {m.completed} | {m.failed} |"
            )
    return "\n".join(rows)


def limits_section(
    reports: list[RunReport], limits: MachineLimits, tokenmill_args: tuple[str, ...] = ()
) -> str:
    """How close each peer's figures come to the compute and bandwidth ceilings; tokenmill's
    weight format (bf16, or int8 when its arguments ask for it) sets its bandwidth bound."""
    gguf_bytes = smollm2_gguf_path().stat().st_size
    int8 = "int8" in tokenmill_args
    formats = {
        "llama-server": ("Q4_1 GGUF", gguf_bytes),
        "transformers": ("float32", 4 * limits.params),
        "tokenmill": ("int8", limits.params) if int8 else ("bf16", 2 * limits.params),
    }
    lines = [
        (
            f"- Compute ceiling: {limits.gemm_gflops:g} GFLOP/s / {limits.gflop_per_token} GFLOP "
            f"a token = about {limits.compute_ceiling:,.0f} tokens/s (prompt plus output)."
        ),
        (
            f"- Batch-1 decode is bound by streaming the weights at ~{limits.bandwidth_gbs:g} "
            f"GB/s: bf16 ({2 * limits.params / 1e6:.0f} MB) "
            f"~{limits.decode_bound(2 * limits.params):.0f} tok/s, int8 "
            f"~{limits.decode_bound(limits.params):.0f} tok/s, the Q4_1 GGUF "
            f"({gguf_bytes / 1e6:.0f} MB) ~{limits.decode_bound(gguf_bytes):.0f} tok/s."
        ),
    ]
    for r in reports:
        if not r.levels:
            lines.append(f"- {r.name}: {r.note.splitlines()[0] if r.note else 'no levels'}")
            continue
        best = max(r.levels, key=lambda lv: lv.metrics.total_token_throughput)
        fmt, nbytes = formats.get(r.name, ("bf16", 2 * limits.params))
        text = (
            f"- {r.name}: best total {best.metrics.total_token_throughput:.0f} tok/s at "
            f"{best.level.label}, {100 * best.metrics.total_token_throughput / limits.compute_ceiling:.0f}% "
            f"of the compute ceiling"
        )
        one = _level(r, 1)
        if one is not None:
            bound = limits.decode_bound(nbytes)
            text += (
                f"; 1 stream {one.output_throughput:.1f} output tok/s, "
                f"{100 * one.output_throughput / bound:.0f}% of the {fmt} bandwidth bound "
                f"(~{bound:.0f} tok/s)"
            )
            if one.ttft.p50 > 0 and one.total_input_tokens and one.completed:
                prompt = one.total_input_tokens / one.completed
                text += f"; prefill ~{prompt / (one.ttft.p50 / 1000):.0f} tok/s from TTFT p50"
        lines.append(text + ".")
    return "\n".join(lines)


def targets_section(reports: list[RunReport]) -> str:
    """Issue 4's tokenmill targets against this run's figures."""
    by = {r.name: r for r in reports}
    tm, ls = by.get("tokenmill"), by.get("llama-server")
    rows = ["| target | tokenmill | llama-server | met |", "|---|---|---|---|"]
    for c, factor in ((1, 1), (32, 3), (64, 4)):
        a = _level(tm, c) if tm else None
        b = _level(ls, c) if ls else None
        got = f"{a.output_throughput:.1f}" if a else "-"
        ref = f"{b.output_throughput:.1f}" if b else "-"
        met = (
            "-"
            if not (a and b)
            else ("yes" if a.output_throughput >= factor * b.output_throughput else "no")
        )
        rows.append(
            f"| output tok/s at concurrency {c} >= {factor}x llama-server | {got} | {ref} | {met} |"
        )
    a = _level(tm, 1) if tm else None
    b = _level(ls, 1) if ls else None
    got = f"{a.ttft.p50 / 1000:.2f} s" if a else "-"
    ref = f"{b.ttft.p50 / 1000:.2f} s" if b else "-"
    met = "-" if not a else ("yes" if a.ttft.p50 <= 150 else "no")
    rows.append(f"| TTFT p50, 1 stream <= 0.15 s | {got} | {ref} | {met} |")
    return "\n".join(rows)


def write_benchmarks_doc(reports: list[RunReport], cfg: CompareConfig, context: dict) -> None:
    """Write cfg.out (markdown) and the plot beside it (same name, .png)."""
    out = cfg.out
    out.parent.mkdir(parents=True, exist_ok=True)
    png = out.with_suffix(".png")
    plot_note = plot_comparison(reports, cfg.concurrency, png)
    w = cfg.workload.describe()
    figure = (
        f"![output throughput and p50 TTFT against concurrency]({png.name})"
        if not plot_note
        else f"Plot not drawn: {plot_note}"
    )
    header = f"""# Benchmarks

Generated by `{context["command"]}` on {context["started"]}; {context["machine"]}.
Model: SmolLM2-135M-Instruct (the packaged Q4_1 GGUF; transformers dequantizes it to float32).

Workload, the same for every peer: {w["dataset"]} prompts of {w["input_len"]} tokens,
{w["output_len"]} output tokens with ignore_eos, greedy, `{cfg.measure.endpoint}` endpoint,
streamed; requests per level: {w["num_prompts"]} (auto = max(8, 2 x concurrency));
seed {w["seed"]}.

{figure}

## Side by side

{side_by_side(reports, cfg.concurrency)}

## Against the physical limits

{limits_section(reports, MachineLimits(), cfg.tokenmill_args)}

## Targets (issue 4)

{targets_section(reports)}

## Notes

- Peers run one after another, alone, on 127.0.0.1; each gets one warm-up request. No
  prompt repeats across the warm-up and the levels, so prompt caches give no free hits.
- transformers runs static batches of B = concurrency back to back; its TTFT is the time
  from a batch's start to the batch's first token, not from a request's arrival.
- llama-server: continuous batching, `--parallel` {max(cfg.concurrency)}, {cfg.threads}
  threads; its exact command is in its section below.
- The load generator shares the 2 cores with the server it measures (it builds the
  workload before any server starts; while measuring it only parses the streams).
- llama.cpp's threads wait for each other at every graph node; when another process takes
  one of the 2 cores its steps stall (8 ms batch-1 steps were seen to become ~1 s). A peer
  whose "load average before" says busy was not measured alone: rerun before comparing.

## Each peer in detail
"""
    parts = [header]
    parts += [to_markdown(r) for r in reports]
    out.write_text("\n".join(parts))
    print(f"wrote {out} and {png}", flush=True)
