"""The `bench` argument parser and the markdown report."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from tests.unit.bench.factories import MergingTokenizer
from tokenmill.bench.cli import _measure, _workload, add_bench_parser
from tokenmill.bench.load import LevelResult, LoadLevel
from tokenmill.bench.metrics import SLO, RequestResult, summarize
from tokenmill.bench.report import RunReport, summary_table, to_markdown
from tokenmill.bench.serve import WorkloadConfig


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tokenmill")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["bench", *argv])


def test_serve_arguments():
    args = parse(
        "serve",
        "--url",
        "http://127.0.0.1:1",
        "--concurrency",
        "1,8,32",
        "--input-len",
        "50",
        "--slo-ttft-ms",
        "500",
        "--endpoint",
        "chat",
    )
    assert args.concurrency == [1, 8, 32]
    w, m = _workload(args), _measure(args)
    assert (w.input_len, w.output_len, w.dataset) == (50, 128, "random")
    assert m.slo == SLO(ttft_ms=500) and m.endpoint == "chat" and m.ignore_eos


def test_rates_and_concurrency_are_exclusive():
    args = parse("serve", "--url", "u", "--request-rate", "2,inf")
    assert args.request_rate[0] == 2.0 and math.isinf(args.request_rate[1])
    with pytest.raises(SystemExit):
        parse("serve", "--url", "u", "--request-rate", "2", "--concurrency", "1")


def test_compare_defaults():
    args = parse("compare")
    assert args.concurrency == [1, 8, 32, 64, 128]
    assert args.prompt_lens == [128, 512, 2048, 8176]
    assert args.peers == ["tokenmill", "llama-server", "transformers"]
    assert args.plans == ["single", "all"] and args.repeats == 3
    assert (args.busy_cores, args.retries) == (0.1, 2)
    assert str(args.out) == "docs/benchmarks.md"


def test_compare_variants_make_tokenmill_rows_after_the_defaults():
    from tokenmill.bench.compare import CompareConfig

    args = parse(
        "compare", "--variant", "int8=--quantization int8", "--variant", "f32=--dtype float32"
    )
    cfg = CompareConfig(variants=tuple(args.variant))
    rows = [(d.name, d.kind, d.args) for d in cfg.lineup]
    assert rows == [
        ("tokenmill", "tokenmill", ()),
        ("tokenmill int8", "tokenmill", ("--quantization", "int8")),
        ("tokenmill f32", "tokenmill", ("--dtype", "float32")),
        ("llama-server", "llama-server", ()),
        ("transformers", "transformers", ()),
    ]
    with pytest.raises(SystemExit):
        parse("compare", "--variant", "no-equals-sign")


def test_compare_refuses_what_would_make_peers_unequal():
    from tokenmill.bench.compare import CompareConfig
    from tokenmill.bench.serve import MeasureConfig

    with pytest.raises(ValueError, match="same raw prompt"):
        CompareConfig(measure=MeasureConfig(endpoint="chat"))
    with pytest.raises(ValueError, match="unknown plans"):
        CompareConfig(plans=("single", "half"))


def test_sharegpt_without_output_len_uses_reply_lengths():
    args = parse("serve", "--url", "u", "--dataset", "sharegpt")
    assert _workload(args).output_len is None


def test_prompts_per_level_scale_with_concurrency():
    w = WorkloadConfig()
    assert [w.prompts_for(LoadLevel(concurrency=c)) for c in (1, 8, 64)] == [8, 16, 128]
    assert WorkloadConfig(num_prompts=5).prompts_for(LoadLevel(concurrency=64)) == 5


def test_report_renders_levels_and_failures(tmp_path):
    ok = RequestResult(True, 100, 10, ttft=0.25, e2e=1.15, itl=[0.1] * 9)
    bad = RequestResult(False, 100, error="HTTP 503: not ready")
    metrics = summarize([ok, bad], 2.0, SLO())
    report = RunReport(
        "peer", {"dataset": "random"}, [LevelResult(LoadLevel(concurrency=4), metrics, [ok, bad])]
    )
    row = summary_table(report).splitlines()[2]
    assert row.startswith("| concurrency 4 | 1 | 1 | 0.50 | 5.0 | 55.0 | - | 250 |")
    assert "HTTP 503: not ready" in to_markdown(report)
    report.write_json(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["levels"][0]["metrics"]["ttft"]["p50"] == pytest.approx(250.0)


def test_workload_gives_each_level_its_own_requests_and_a_warm_up():
    w = WorkloadConfig(input_len=6, output_len=3)
    levels = [LoadLevel(concurrency=1), LoadLevel(concurrency=5)]
    built = w.build(MergingTokenizer(), levels)
    assert [len(reqs) for reqs in built.levels] == [8, 10]
    prompts = [r.prompt for r in built.requests]
    assert len(prompts) == 19 and len(set(prompts)) == 19
    assert built.requests[0] == built.warm_up
