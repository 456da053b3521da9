"""`tokenmill drift profile requests.jsonl -o profile.json`: a drift reference from past
traffic, for `tokenmill serve --drift --drift-profile profile.json`."""

from __future__ import annotations

import argparse
import sys

from tokenmill.errors import ConfigError, TokenmillError


def add_drift_parser(subparsers: argparse._SubParsersAction) -> None:
    """Adds `drift profile` to the `tokenmill` subcommands."""
    drift = subparsers.add_parser(
        "drift",
        help="build drift-detection reference profiles",
        description="Drift detection's offline tools (see docs/drift.md).",
    )
    sub = drift.add_subparsers(dest="drift_command", required=True)
    profile = sub.add_parser(
        "profile",
        help="build a reference profile from a JSONL file of requests",
        description='Reads one JSON object a line ({"prompt": ..., and optionally '
        '"output", "output_tokens", "finish_reason", "mean_logprob"}), embeds the '
        "prompts with the sentence encoder and writes the reference profile as JSON.",
    )
    profile.add_argument("records", metavar="REQUESTS.jsonl")
    profile.add_argument("-o", "--output", required=True, metavar="PROFILE.json")
    profile.add_argument(
        "--embedding-model",
        metavar="NAME|PATH",
        help="The encoder the server will use (default: its default, all-MiniLM-L6-v2).",
    )
    profile.add_argument(
        "--no-embeddings",
        action="store_true",
        help="Leave the prompt-embedding signal out (no encoder is loaded).",
    )
    profile.set_defaults(func=run_profile)


def run_profile(args: argparse.Namespace) -> int:
    """Builds and saves the profile; returns the exit code (2 for bad input)."""
    from tokenmill.config import EmbeddingConfig
    from tokenmill.observability.drift import build_profile, read_records

    try:
        records = list(read_records(args.records))
        embed, encoder = None, None
        if not args.no_embeddings:
            from tokenmill.engine.embedding import EmbeddingService

            service = EmbeddingService.from_config(EmbeddingConfig(model=args.embedding_model))
            service.start()
            encoder = service.model_name

            def embed(texts):
                return service.embed_sync(texts, truncate=True).vectors

        profile = build_profile(records, embed, encoder)
        profile.save(args.output)
    except OSError as exc:
        print(f"tokenmill: error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except (ConfigError, TokenmillError) as exc:
        print(f"tokenmill: error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    print(f"tokenmill: wrote a drift profile of {profile.size} requests to {args.output}")
    return 0
