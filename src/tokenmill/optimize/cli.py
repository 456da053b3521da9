"""`tokenmill optimize quantize|prune|distill|export`: registered on the main entry point
by `add_optimize_parser(subparsers)`; each parsed namespace carries `func`, which runs
the command and returns an exit status."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tokenmill.errors import ConfigError, TokenmillError

EPILOG = """\
Every command writes a servable directory (`tokenmill serve --model OUT_DIR`) and
report.json / report.md comparing the base model with the result: perplexity on a
held-out text, multiple-choice accuracy, greedy agreement, size on disk and in memory,
batch-1 and batch-32 tokens/s.

Examples:
  tokenmill optimize quantize --method int8 -o out/int8
  tokenmill optimize quantize --method int4 --group-size 32 -o out/int4-g32
  tokenmill optimize quantize --method gguf-q4_k -o out/q4k
  tokenmill optimize prune --method 2:4 --recover-steps 100 -o out/sparse24
  tokenmill optimize distill --layers 15 --steps 300 -o out/student15
  tokenmill optimize export onnx -o out/onnx
  tokenmill optimize quantize --method int8 -o out/int8 --register smollm2 \
      --models-file models.toml --server http://127.0.0.1:8000
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        nargs="?",
        default=None,
        metavar="MODEL",
        help="packaged name, .gguf file or HF directory (default: the packaged "
        "smollm2-135m-instruct)",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="OUT_DIR",
        help="directory to write the model and its report into",
    )
    p.add_argument(
        "--eval",
        choices=("full", "quick", "smoke"),
        default="full",
        help="measurement size: full (default), quick (shorter runs) or smoke (the test "
        "suite's: fewer questions, a short throughput run)",
    )
    p.add_argument(
        "--mlflow",
        metavar="URI",
        help="log the run to this MLflow tracking URI and register the output "
        "as a new model version (e.g. sqlite:///mlflow.db)",
    )
    p.add_argument(
        "--mlflow-experiment",
        default="tokenmill-optimize",
        help="MLflow experiment (default: tokenmill-optimize)",
    )
    p.add_argument(
        "--mlflow-model",
        metavar="NAME",
        help="registered model name in MLflow (default: OUT_DIR's name)",
    )
    p.add_argument(
        "--base-report",
        type=Path,
        metavar="REPORT_JSON",
        help="reuse the base measurements of an earlier report.json (same model "
        "and --eval) instead of measuring the base again",
    )
    p.add_argument(
        "--register",
        metavar="NAME",
        help="add the output as a new version of NAME (one more than its highest; traffic "
        "0, to canary it) in --models-file and, with --server, in that running server",
    )
    p.add_argument(
        "--models-file",
        type=Path,
        metavar="FILE",
        help="the models file --register edits (default: the one a server would read, "
        "$TOKENMILL_MODELS)",
    )
    p.add_argument(
        "--server",
        metavar="URL",
        help="with --register: also load the version into this running server through "
        "POST /admin/models (http://host:port)",
    )
    p.add_argument(
        "--admin-key",
        metavar="KEY",
        help="admin API key for --server (default: $TOKENMILL_ADMIN_KEY; not needed when "
        "the server runs with --admin-open)",
    )


def _training(p: argparse.ArgumentParser, lr: float) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--seq-len", type=int, default=128, help="tokens per window (default 128)")
    g.add_argument("--batch-size", type=int, default=4, help="windows per step (default 4)")
    g.add_argument("--lr", type=float, default=lr, help=f"AdamW learning rate (default {lr})")
    g.add_argument(
        "--temperature", type=float, default=2.0, help="distillation temperature (default 2.0)"
    )
    g.add_argument(
        "--checkpoint-every",
        type=int,
        default=25,
        help="steps between resumable checkpoints (default 25)",
    )
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def add_optimize_parser(commands) -> argparse.ArgumentParser:
    """Adds `optimize` and its four subcommands to the `tokenmill` subparsers."""
    opt = commands.add_parser(
        "optimize",
        help="Quantize, prune, distill or export a model, with a quality report.",
        description="Make a model cheaper to serve and measure what it costs in quality.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = opt.add_subparsers(dest="optimize_command", metavar="COMMAND", required=True)

    q = sub.add_parser("quantize", help="int8 (SmoothQuant), int4 (GPTQ), GGUF Q8_0 / Q4_K")
    _common(q)
    q.add_argument("--method", required=True, choices=("int8", "int4", "gguf-q8_0", "gguf-q4_k"))
    q.add_argument(
        "--group-size",
        type=int,
        default=128,
        choices=(32, 128),
        help="int4: weights per scale/min group (default 128)",
    )
    q.add_argument(
        "--alpha",
        type=float,
        default=0.5,
        help="int8: SmoothQuant migration strength, 0 disables (default 0.5)",
    )
    q.add_argument(
        "--calib-tokens",
        type=int,
        default=1024,
        help="calibration tokens (default 1024, at most ~1900)",
    )
    q.set_defaults(func=_run_quantize)

    p = sub.add_parser("prune", help="remove heads or channels, or sparsify (2:4, magnitude)")
    _common(p)
    p.add_argument("--method", required=True, choices=("heads", "channels", "2:4", "magnitude"))
    p.add_argument(
        "--amount",
        type=float,
        default=0.5,
        help="fraction to remove (default 0.5; 2:4 is always half)",
    )
    p.add_argument(
        "--recover-steps",
        type=int,
        default=0,
        help="steps of recovery fine-tuning on the base model's logits (default 0)",
    )
    p.add_argument(
        "--calib-tokens",
        type=int,
        default=1024,
        help="tokens for the importance scores (default 1024)",
    )
    _training(p, lr=5e-5)
    p.set_defaults(func=_run_prune)

    d = sub.add_parser("distill", help="train a smaller student on the model's logits")
    _common(d)
    d.add_argument("--layers", type=int, required=True, help="student layers")
    d.add_argument("--steps", type=int, required=True, help="training steps")
    _training(d, lr=1e-4)
    d.set_defaults(func=_run_distill)

    e = sub.add_parser("export", help="export to ONNX with KV-cache inputs/outputs")
    e.add_argument("format", choices=("onnx",), help="onnx")
    _common(e)
    e.set_defaults(func=_run_export)
    return opt


def _spec(args: argparse.Namespace, command: str, method: str, params: dict):
    from tokenmill.optimize.evaluation import EVAL_CONFIGS
    from tokenmill.optimize.pipeline import RunSpec

    return RunSpec(
        command=command,
        method=method,
        model=args.model,
        out=args.output,
        params=params,
        eval_config=EVAL_CONFIGS[args.eval],
        mlflow_uri=args.mlflow,
        mlflow_experiment=args.mlflow_experiment,
        mlflow_model=args.mlflow_model,
        register=_register_target(args),
        base_report=args.base_report,
    )


def _register_target(args: argparse.Namespace):
    """The --register target, or None; ConfigError when no models file is known."""
    if not args.register:
        if args.models_file or args.server:
            raise ConfigError("--models-file and --server go with --register NAME.")
        return None
    from tokenmill.optimize.registration import RegisterTarget

    models_file = args.models_file or os.environ.get("TOKENMILL_MODELS")
    if not models_file:
        raise ConfigError(
            "--register needs a models file: pass --models-file FILE (or set "
            "TOKENMILL_MODELS, as for `tokenmill serve --models FILE`).",
            "models",
        )
    return RegisterTarget(
        name=args.register,
        models_file=Path(models_file),
        server_url=args.server,
        admin_key=args.admin_key or os.environ.get("TOKENMILL_ADMIN_KEY") or None,
    )


def _train_settings(args: argparse.Namespace, steps: int):
    from tokenmill.optimize.distill import TrainSettings

    return TrainSettings(
        steps=steps,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        lr=args.lr,
        temperature=args.temperature,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
    )


def _execute(spec, produce) -> int:
    from tokenmill.optimize.pipeline import run

    report = run(spec, produce)
    print(report.to_markdown())
    print(f"wrote {spec.out}/report.json and report.md")
    return 0


def _guard(fn):
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (TokenmillError, ValueError, RuntimeError, OSError) as exc:
            message = getattr(exc, "message", None) or str(exc)
            print(f"tokenmill optimize: error: {message}", file=sys.stderr)
            return 2 if isinstance(exc, ValueError | ConfigError) else 1

    return wrapped


@_guard
def _run_quantize(args: argparse.Namespace) -> int:
    from tokenmill.optimize import commands
    from tokenmill.optimize.quantize import QuantizeSettings

    s = QuantizeSettings(
        method=args.method,
        group_size=args.group_size,
        alpha=args.alpha,
        calib_tokens=args.calib_tokens,
    )
    params = {"group_size": s.group_size} if s.method == "int4" else {}
    if s.method == "int8":
        params = {"alpha": s.alpha}
    if s.method in ("int8", "int4"):
        params["calib_tokens"] = s.calib_tokens
    return _execute(_spec(args, "quantize", s.method, params), commands.quantize(s))


@_guard
def _run_prune(args: argparse.Namespace) -> int:
    from tokenmill.optimize import commands

    amount = 0.5 if args.method == "2:4" else args.amount
    recover = _train_settings(args, args.recover_steps) if args.recover_steps else None
    params = {"amount": amount, "recover_steps": args.recover_steps}
    produce = commands.prune(args.method, amount, recover, args.calib_tokens)
    return _execute(_spec(args, "prune", args.method, params), produce)


@_guard
def _run_distill(args: argparse.Namespace) -> int:
    from tokenmill.optimize import commands
    from tokenmill.optimize.checkpoint import read_arch
    from tokenmill.optimize.distill import evenly_spaced

    evenly_spaced(read_arch(args.model).num_layers, args.layers)  # refuse before any work
    settings = _train_settings(args, args.steps)
    params = {
        "layers": args.layers,
        "steps": args.steps,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "temperature": args.temperature,
    }
    produce = commands.distill(args.layers, settings, progress=args.progress)
    return _execute(_spec(args, "distill", f"{args.layers}-layers", params), produce)


@_guard
def _run_export(args: argparse.Namespace) -> int:
    from tokenmill.optimize import commands

    return _execute(_spec(args, "export", args.format, {}), commands.export_onnx_cmd())


def main(argv: list[str] | None = None) -> int:
    """Run `optimize` alone (`python -m tokenmill.optimize.cli quantize ...`)."""
    parser = argparse.ArgumentParser(prog="tokenmill")
    add_optimize_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["optimize", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
