"""The `tokenmill batch` subcommand: a Batch API input file run offline."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping
from pathlib import Path

from tokenmill.cli.settings import add_settings, config_from_args
from tokenmill.config.batch import OfflineBatchConfig
from tokenmill.errors import ConfigError

EPILOG = """\
Each input line is a request in the OpenAI Batch API's format:
  {"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions",
   "body": {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 32}}
Each output line is its result, in input order:
  {"id": "batch_req_...", "custom_id": "q1", "response": {"status_code": 200,
   "request_id": "...", "body": {...}}, "error": null}
A malformed line or a refused request becomes an error line; it never stops the run.
Serve the same format asynchronously with `tokenmill serve` (POST /v1/files, /v1/batches).
"""


def add_batch_parser(commands) -> argparse.ArgumentParser:
    """Adds `batch` to the `tokenmill` subparsers; the parsed namespace carries `func`."""
    p = commands.add_parser(
        "batch",
        help="Run a Batch API file of requests in this process (no server).",
        description="Run every request of a JSONL file in the OpenAI Batch API format through "
        "the model, with a progress bar, and write one result line per input line.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", metavar="INPUT.jsonl", help="Requests, one JSON object per line.")
    p.add_argument(
        "-o", "--output", required=True, metavar="OUTPUT.jsonl", help="Where the results go."
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=None,
        metavar="N",
        help="Requests in flight at once [default: twice --max-num-seqs].",
    )
    p.add_argument("--no-progress", action="store_true", help="No progress bar on stderr.")
    add_settings(p, OfflineBatchConfig)
    p.set_defaults(func=run_batch_command)
    return p


def run_batch_command(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Runs `tokenmill batch`; ConfigError (exit 2) for bad settings or an unusable input."""
    config = config_from_args(OfflineBatchConfig, args, env)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from tokenmill.batch.offline import run_offline

    if config.gateway.api_key or config.gateway.keys:
        raise ConfigError(
            "tokenmill batch has no clients to authenticate: --api-key and --keys do not apply."
        )
    from tokenmill.model.registry import resolve_model

    resolve_model(config.engine.model.model)  # an unknown model fails before the slow imports
    output = Path(args.output)
    summary = run_offline(
        config, Path(args.input), output, args.concurrency, progress=not args.no_progress
    )
    print(
        f"tokenmill batch: {summary.total} requests, {summary.succeeded} succeeded, "
        f"{summary.failed} failed; results in {output}",
        file=sys.stderr,
    )
    return 0
