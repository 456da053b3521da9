"""The README table of `tokenmill optimize` variants, from the reports under docs/optimize/.

Reads every docs/optimize/*/report.json (copied there from longer runs' output
directories) and prints a markdown table: size, speed and quality of the base model
(as measured by the run named by --base, whose base the others reused through
--base-report) and of each variant, with the command that produced it. --write puts the
table after its marker in docs/optimize/README.md and in the top-level README.

    python benchmarks/optimize_table.py [--docs docs/optimize] [--base onnx] [--write]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

MARK = "<!-- variants table: benchmarks/optimize_table.py -->"
README_MARK = "<!-- optimize table: copied from docs/optimize/README.md -->"
SERVED_ON = "served on (what computed the measurements)"


def command_line(report: dict, name: str) -> str:
    cmd = report["command"]
    head = "export onnx" if cmd == "export" else f"{cmd}"
    args = []
    if cmd == "quantize":
        args.append(f"--method {report['method']}")
        for k, v in report["params"].items():
            args.append(f"--{k.replace('_', '-')} {v}")
    elif cmd == "prune":
        args.append(f"--method {report['method']}")
        args.append(f"--amount {report['params']['amount']}")
        if report["params"].get("recover_steps"):
            args.append(f"--recover-steps {report['params']['recover_steps']}")
    elif cmd == "distill":
        p = report["params"]
        args.append(f"--layers {p['layers']} --steps {p['steps']}")
    return f"`tokenmill optimize {head} {' '.join(args)} -o out/{name}`".replace("  ", " ")


def row(name: str, m: dict, command: str) -> str:
    return (
        f"| {name} | {m['size_bytes'] / 1e6:.0f} | {m['memory_bytes'] / 1e6:.0f} | "
        f"{m['tok_s_batch1']:.1f} | {m['tok_s_batch32']:.1f} | {m['perplexity']:.2f} | "
        f"{m['accuracy']:.3f} | {m['agreement']:.3f} | {command} |"
    )


def table(docs: Path, base_run: str) -> str:
    reports = sorted(docs.glob("*/report.json"))
    if not reports:
        raise SystemExit(f"no reports under {docs}")
    loaded = [(p.parent.name, json.loads(p.read_text())) for p in reports]
    by_name = dict(loaded)
    if base_run not in by_name:
        raise SystemExit(f"--base {base_run}: no {docs / base_run / 'report.json'}")
    base = by_name[base_run]["base"]
    served = by_name[base_run]["details"].get(SERVED_ON, {}).get("base", "float32")
    lines = [
        (
            "| variant | disk (MB) | memory (MB) | tok/s batch 1 | tok/s batch 32 | perplexity "
            "| MC accuracy | greedy agreement | command |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        row(
            f"base: SmolLM2-135M-Instruct Q4_1 GGUF, served on {served}",
            base,
            "`tokenmill serve` (default)",
        ),
    ]
    for name, r in loaded:
        lines.append(row(name, r["result"], command_line(r, name)))
    return "\n".join(lines)


def replace_table(path: Path, mark: str, text: str) -> None:
    """Replaces the markdown table (the run of lines starting with "|") after `mark` in
    `path` with `text`, keeping everything else."""
    page = path.read_text()
    if mark not in page:
        raise SystemExit(f"{path} has no {mark}")
    head, _, rest = page.partition(mark)
    lines = rest.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    path.write_text(head + mark + "\n".join([*lines[:start], text, *lines[end:]]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=Path, default=Path("docs/optimize"))
    ap.add_argument(
        "--base",
        default="onnx",
        help="the run whose base measurements head the table (default onnx: the run that "
        "measured the base the others reuse)",
    )
    ap.add_argument(
        "--readme",
        type=Path,
        default=Path("README.md"),
        help="the top-level README whose copy of the table --write also replaces",
    )
    ap.add_argument(
        "--write",
        action="store_true",
        help="replace the table after its marker in docs/optimize/README.md and --readme",
    )
    args = ap.parse_args()
    text = table(args.docs, args.base)
    print(text)
    if args.write:
        replace_table(args.docs / "README.md", MARK, text)
        replace_table(args.readme, README_MARK, text)


if __name__ == "__main__":
    main()
