"""The README table of `tokenmill optimize` variants, from the reports under docs/optimize/.

Reads every docs/optimize/*/report.json (copied there from longer runs' output
directories) and prints a markdown table: size, speed and quality of the base model
and of each variant, with the command that produced it.

    python benchmarks/optimize_table.py [--docs docs/optimize] [--write]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

MARK = "<!-- variants table: benchmarks/optimize_table.py -->"


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


def table(docs: Path) -> str:
    reports = sorted(docs.glob("*/report.json"))
    if not reports:
        raise SystemExit(f"no reports under {docs}")
    loaded = [(p.parent.name, json.loads(p.read_text())) for p in reports]
    base = loaded[0][1]["base"]
    lines = [
        (
            "| variant | disk (MB) | memory (MB) | tok/s batch 1 | tok/s batch 32 | perplexity "
            "| MC accuracy | greedy agreement | command |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        row(
            "base: SmolLM2-135M-Instruct Q4_1 GGUF, served float32",
            base,
            "`tokenmill serve` (default)",
        ),
    ]
    for name, r in loaded:
        lines.append(row(name, r["result"], command_line(r, name)))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=Path, default=Path("docs/optimize"))
    ap.add_argument(
        "--write",
        action="store_true",
        help="replace the table after the marker in docs/optimize/README.md",
    )
    args = ap.parse_args()
    text = table(args.docs)
    print(text)
    if args.write:
        readme = args.docs / "README.md"
        head, _, rest = readme.read_text().partition(MARK)
        _, heading, tail = rest.partition("\n## ")  # the table ends at the next section
        readme.write_text(f"{head}{MARK}\n\n{text}\n{heading}{tail}")


if __name__ == "__main__":
    main()
