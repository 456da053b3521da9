"""report.json and report.md: what a run did and what it cost in quality, base vs result."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tokenmill.optimize.evaluation import EvalConfig, Metrics

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
SERVED_ON = "served on (what computed the measurements)"
"""details key: {"base": ..., "result": ...}, each the engine's kernel path (e.g.
"gguf-blocks:avx2", "float32", "int8") or the runtime that ran the result."""
MACHINE_LOAD = "machine load during the run (tok/s depend on it)"

_ROWS = (
    ("perplexity", "perplexity (held-out text, lower is better)", "{:.3f}"),
    ("accuracy", "multiple-choice accuracy", "{:.3f}"),
    ("agreement", "greedy agreement with base", "{:.3f}"),
    ("size_bytes", "weights on disk (MB)", "mb"),
    ("memory_bytes", "weights in memory (MB)", "mb"),
    ("tok_s_batch1", "tokens/s, batch 1", "{:.1f}"),
    ("tok_s_batch32", "tokens/s, batch 32", "{:.1f}"),
)


def _fmt(value: float, style: str) -> str:
    return f"{value / 1e6:.1f}" if style == "mb" else style.format(value)


@dataclass
class Report:
    """One optimization run: `base` and `result` have the same keys (Metrics)."""

    command: str
    """"quantize", "prune", "distill" or "export"."""
    method: str
    model: str
    output: str
    params: dict[str, Any]
    base: Metrics
    result: Metrics
    eval_config: EvalConfig
    details: dict[str, Any] = field(default_factory=dict)
    """Method-specific findings (e.g. round-to-nearest vs GPTQ, fused layers, corpus)."""
    elapsed_s: float = 0.0
    base_greedy: list[list[int]] = field(default_factory=list)
    """The base model's greedy tokens on the agreement prompts, so a later run can
    reuse this report's base measurements (`--base-report`)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "method": self.method,
            "model": self.model,
            "output": self.output,
            "params": self.params,
            "base": self.base.to_dict(),
            "result": self.result.to_dict(),
            "eval": asdict(self.eval_config),
            "details": self.details,
            "elapsed_s": round(self.elapsed_s, 1),
            "base_greedy": self.base_greedy,
        }

    def to_markdown(self) -> str:
        lines = [
            f"# tokenmill optimize {self.command} --method {self.method}",
            "",
            f"Model `{self.model}` -> `{self.output}`; parameters: "
            + ", ".join(f"{k}={v}" for k, v in self.params.items()),
            "",
            "| measure | base | result | change |",
            "|---|---:|---:|---:|",
        ]
        base, result = self.base.to_dict(), self.result.to_dict()
        for key, label, style in _ROWS:
            b, r = base[key], result[key]
            change = f"{100 * (r / b - 1):+.1f}%" if b else "n/a"
            lines.append(f"| {label} | {_fmt(b, style)} | {_fmt(r, style)} | {change} |")
        lines += ["", f"Evaluation settings: {asdict(self.eval_config)}.", ""]
        for key, value in self.details.items():
            lines.append(f"## {key}")
            lines.append("")
            lines.append(_details_markdown(value))
            lines.append("")
        lines.append(f"Run time: {self.elapsed_s:.0f} s.")
        return "\n".join(lines) + "\n"

    def write(self, out: Path) -> None:
        """Writes report.json and report.md into `out`."""
        (out / REPORT_JSON).write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        (out / REPORT_MD).write_text(self.to_markdown())


def load_base(path: Path, model: str, eval_config: EvalConfig) -> tuple[Metrics, list]:
    """The base metrics and greedy tokens of an earlier report.json; ValueError when it
    measured another model or with other evaluation settings."""
    saved = json.loads(Path(path).read_text())
    if saved["model"] != model or saved["eval"] != asdict(eval_config):
        raise ValueError(
            f"{path} measured {saved['model']!r} with {saved['eval']}; this run needs "
            f"{model!r} with {asdict(eval_config)}"
        )
    return Metrics(**saved["base"]), saved["base_greedy"]


def base_served_on(path: Path) -> str:
    """What computed the base measurements of an earlier report.json ("not recorded"
    for reports written before the key existed)."""
    saved = json.loads(Path(path).read_text())
    return saved.get("details", {}).get(SERVED_ON, {}).get("base", "not recorded")


def _details_markdown(value: Any) -> str:
    if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
        keys = list(dict.fromkeys(k for v in value.values() for k in v))
        rows = ["| | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
        for name, v in value.items():
            rows.append(f"| {name} | " + " | ".join(_cell(v.get(k)) for k in keys) + " |")
        return "\n".join(rows)
    if isinstance(value, dict):
        return "\n".join(f"- {k}: {_cell(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "\n".join(f"- {_cell(v)}" for v in value)
    return str(value)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)
