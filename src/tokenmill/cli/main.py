"""`tokenmill`: the one command-line entry point and its subcommands."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence

from tokenmill import __version__
from tokenmill.batch.cli import add_batch_parser
from tokenmill.bench.cli import add_bench_parser
from tokenmill.cli.drift import add_drift_parser
from tokenmill.cli.feedback import add_feedback_parser
from tokenmill.cli.generate import add_sampling_flags
from tokenmill.cli.settings import AppConfig, EngineConfig, add_settings, config_from_args
from tokenmill.errors import ConfigError, TokenmillError
from tokenmill.kafka.cli import add_kafka_parser
from tokenmill.optimize.cli import add_optimize_parser

DESCRIPTION = """\
tokenmill: an LLM inference server with an OpenAI-compatible API.

  tokenmill serve                  start the HTTP server (default model, 127.0.0.1:8000)
  tokenmill generate "Once upon"   complete a prompt in this process and print it
  tokenmill chat                   chat with the model in the terminal
  tokenmill batch IN -o OUT        run a Batch API file of requests in this process
  tokenmill kafka ...              serve requests from a Kafka topic
  tokenmill bench compare          tokenmill against llama.cpp and transformers

Run `tokenmill COMMAND --help` for a command's options.
"""

SERVE_EPILOG = """\
Settings come from, in order of precedence: these flags, TOKENMILL_* environment
variables (e.g. TOKENMILL_PORT=9000), a --config file (TOML or JSON, keys named like the
flags: port = 9000), then the defaults shown.

Once the startup line appears, point any OpenAI client at the printed URL, e.g.
  from openai import OpenAI
  client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
  client.chat.completions.create(model="smollm2-135m-instruct",
                                 messages=[{"role": "user", "content": "Hi"}])
GET /ready answers 200 once the model is loaded; SIGTERM or Ctrl-C drains and exits 0.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with its subcommands."""
    parser = argparse.ArgumentParser(
        prog="tokenmill",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tokenmill {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="Start the OpenAI-compatible HTTP server.",
        description="Serve a model over an OpenAI-compatible HTTP API.",
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings(serve, AppConfig)

    gen = commands.add_parser(
        "generate",
        help="Complete prompts in this process (no server) and print them.",
        description="Complete one or more prompts with the model, without a server. One "
        "prompt streams as it is generated; several are batched and printed in order.",
        epilog='Example: tokenmill generate --chat "Name three rivers." --max-tokens 64',
    )
    gen.add_argument("prompts", nargs="+", metavar="PROMPT", help='Prompt text; "-" reads stdin.')
    gen.add_argument(
        "--chat",
        action="store_true",
        help="Wrap each prompt as a user message in the model's chat template.",
    )
    gen.add_argument("--system", metavar="TEXT", help="System prompt (with --chat).")
    add_sampling_flags(gen, max_tokens=128)
    add_settings(gen, EngineConfig)

    chat = commands.add_parser(
        "chat",
        help="Chat with the model in the terminal (no server).",
        description="An interactive chat in the terminal: replies stream as they are "
        "generated and the conversation is kept. Commands: /reset clears the history, "
        "/exit (or Ctrl-D) quits, Ctrl-C interrupts a reply.",
    )
    chat.add_argument("--system", metavar="TEXT", help="System prompt for the conversation.")
    add_sampling_flags(chat, max_tokens=512)
    add_settings(chat, EngineConfig)
    add_batch_parser(commands)
    add_kafka_parser(commands)
    add_bench_parser(commands)
    add_optimize_parser(commands)
    add_drift_parser(commands)
    add_feedback_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Parses arguments, resolves settings and runs the command; returns the exit code
    (2 for bad settings, 1 for a failure to load or serve)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    env = dict(os.environ) if env is None else env
    if args.command is None:
        parser.print_help()
        return 2
    if args.command in ("bench", "optimize", "drift", "feedback"):
        return args.func(args)
    try:
        return _run(args, env)
    except ConfigError as exc:
        print(f"tokenmill: error: {exc.message}", file=sys.stderr)
        return 2
    except TokenmillError as exc:
        print(f"tokenmill: error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    if args.command in ("batch", "kafka"):
        return args.func(args, env)
    if args.command == "serve":
        config = config_from_args(AppConfig, args, env)
        from tokenmill.observability.log_records import configure_logging

        configure_logging(config.server.log_level, config.observability.log_format)
        from tokenmill.cli.serve import serve

        return serve(config)
    engine = config_from_args(EngineConfig, args, env)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from tokenmill.model.registry import resolve_model

    resolve_model(engine.model.model)  # an unknown model fails before the slow imports
    if args.command == "generate":
        from tokenmill.cli.generate import generate

        return generate(args, engine)
    from tokenmill.cli.chat import chat

    return chat(args, engine)


if __name__ == "__main__":
    sys.exit(main())
