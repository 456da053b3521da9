"""`tokenmill feedback export --db FILE`: stored ratings as JSONL, for evaluation or
fine-tuning sets."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tokenmill.errors import ConfigError, InvalidRequestError


def add_feedback_parser(subparsers: argparse._SubParsersAction) -> None:
    """Adds `feedback export` to the `tokenmill` subcommands."""
    feedback = subparsers.add_parser(
        "feedback",
        help="export the ratings POST /v1/feedback stored",
        description="The feedback store's offline tools.",
    )
    sub = feedback.add_subparsers(dest="feedback_command", required=True)
    export = sub.add_parser(
        "export",
        help="write stored ratings as JSON lines",
        description="Writes one JSON object a line per rating, oldest first: the rating, "
        "the comment, the completion id, its model and version, who served it and the "
        "cache and guardrail decisions.",
    )
    export.add_argument("--db", required=True, metavar="FILE", help="The --feedback-db file.")
    export.add_argument("-o", "--output", metavar="FILE", help="Default: standard output.")
    export.add_argument(
        "--since", metavar="TIME", help="Only ratings after this ISO 8601 time or Unix second."
    )
    export.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    """Writes the JSONL; returns the exit code (2 for a missing file or bad --since)."""
    from tokenmill.observability.feedback import FeedbackStore
    from tokenmill.server.feedback_routes import parse_since

    if not Path(args.db).is_file():
        print(f"tokenmill: error: {args.db}: no such feedback database", file=sys.stderr)
        return 2
    try:
        since = parse_since(args.since)
        store = FeedbackStore(args.db)
    except (ConfigError, InvalidRequestError) as exc:
        print(f"tokenmill: error: {exc.message}", file=sys.stderr)
        return 2
    rows = store.since(since)
    store.close()
    lines = "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in rows)
    if args.output:
        Path(args.output).write_text(lines, encoding="utf-8")
        print(f"tokenmill: wrote {len(rows)} ratings to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(lines)
    return 0
