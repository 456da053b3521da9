"""The targets table: met, not met, peer failed, not measured, and the bounds it states."""

from __future__ import annotations

import pytest

from tests.unit.bench.records import peer, record, sample
from tokenmill.bench.targets import (
    NO,
    NOT_MEASURED,
    PEER_FAILED,
    TARGETS,
    YES,
    judge,
    judge_all,
)


def target(figure: str, versus: str | None = None):
    return next(t for t in TARGETS if t.figure.startswith(figure) and t.versus == versus)


def three(**kw):
    return [sample(**kw), sample(**kw), sample(**kw)]


def test_the_declared_table_covers_issue_15_part_5():
    wanted = {(t.figure, t.op, t.threshold, t.versus) for t in TARGETS}
    assert ("output tok/s at concurrency 1", ">=", 1.5, "llama-server") in wanted
    assert ("output tok/s at concurrency 32", ">=", 3.0, "llama-server") in wanted
    assert ("output tok/s at concurrency 64", ">=", 4.0, "llama-server") in wanted
    assert ("output tok/s at concurrency 1", ">=", 4.0, "transformers") in wanted
    assert ("output tok/s at concurrency 32", ">=", 2.0, "transformers") in wanted
    assert ("prefill tok/s, 512-token prompt", ">=", 2.0, "llama-server") in wanted
    assert ("TTFT p50, 1 stream, 100-token prompt", "<=", 0.1, None) in wanted
    assert ("server RSS at 64 streams", "<=", 1.0, None) in wanted
    assert len(TARGETS) == 9


def test_a_ratio_at_the_threshold_is_met_and_below_it_is_not():
    tm = peer("tokenmill", c1=three(output_tok_s=60.0), c32=three(output_tok_s=200.0))
    ls = peer("llama-server", c1=three(output_tok_s=40.0), c32=three(output_tok_s=80.0))
    rec = record([tm, ls])
    at_one = judge(target("output tok/s at concurrency 1", "llama-server"), rec)
    assert at_one.status == YES  # 60 = 1.5 x 40
    at_32 = judge(target("output tok/s at concurrency 32", "llama-server"), rec)
    assert at_32.status == NO  # 200 < 3 x 80
    assert at_32.value.median == 200.0 and at_32.reference.median == 80.0


def test_the_median_decides_not_the_best_repeat():
    tm = peer("tokenmill", c1=[sample(output_tok_s=v) for v in (50.0, 59.0, 90.0)])
    ls = peer("llama-server", c1=three(output_tok_s=40.0))
    v = judge(target("output tok/s at concurrency 1", "llama-server"), record([tm, ls]))
    assert v.status == NO and v.value.median == 59.0 and v.value.high == 90.0


def test_a_peer_that_failed_to_start_makes_its_targets_peer_failed():
    tm = peer("tokenmill", c1=three(output_tok_s=60.0))
    ls = peer("llama-server")
    ls.failures["throughput"] = "failed to start: llama-server exited with signal 11 (SIGSEGV)"
    v = judge(target("output tok/s at concurrency 1", "llama-server"), record([tm, ls]))
    assert v.status == PEER_FAILED
    assert "signal 11 (SIGSEGV)" in v.note and v.value.median == 60.0


def test_a_failure_in_another_suite_does_not_void_a_measured_level():
    tm = peer("tokenmill", c1=three(output_tok_s=70.0), p512=three(prompt=512.0))
    ls = peer("llama-server", c1=three(output_tok_s=40.0))
    ls.failures["ttft"] = "died at ttft 8176, repeat 1"
    rec = record([tm, ls])
    assert judge(target("output tok/s at concurrency 1", "llama-server"), rec).status == YES
    v = judge(next(t for t in TARGETS if t.figure.startswith("prefill")), rec)
    assert v.status == PEER_FAILED and "died at ttft 8176" in v.note


def test_busy_repeats_do_not_count():
    tm = peer("tokenmill", c1=[sample(output_tok_s=99.0, clean=False)] * 3)
    ls = peer("llama-server", c1=three(output_tok_s=40.0))
    v = judge(target("output tok/s at concurrency 1", "llama-server"), record([tm, ls]))
    assert v.status == NOT_MEASURED and "no counted repeat of tokenmill" in v.note


def test_absolute_targets():
    tm = peer("tokenmill", c1=three(ttft_ms=80.0), c64=three(rss=1_200_000_000))
    rec = record([tm])
    assert judge(target("TTFT p50"), rec).status == YES
    rss = judge(target("server RSS"), rec)
    assert rss.status == NO and rss.value.median == pytest.approx(1.2)


def test_prefill_is_prompt_tokens_over_ttft():
    tm = peer("tokenmill", p512=three(prompt=512.0, ttft_ms=100.0))  # 5120 tok/s
    ls = peer("llama-server", p512=three(prompt=512.0, ttft_ms=300.0))  # 1707 tok/s
    v = judge(next(t for t in TARGETS if t.figure.startswith("prefill")), record([tm, ls]))
    assert v.status == YES
    assert v.value.median == pytest.approx(5120.0)
    assert v.reference.median == pytest.approx(512 / 0.3)


def test_decode_against_the_bandwidth_bound_states_the_bound():
    # 10 GB/s over 100 MB a step: 100 tok/s; TPOT 15 ms is 66.7 tok/s, 67% of it.
    tm = peer("tokenmill", c1=three(tpot_ms=15.0))
    v = judge(target("batch-1 decode"), record([tm]))
    assert v.status == YES and v.value.median == pytest.approx(2 / 3)
    assert "bound 100 tok/s = 10.0 GB/s / 100.0 MB a step" in v.note
    slow = judge(target("batch-1 decode"), record([peer("tokenmill", c1=three(tpot_ms=25.0))]))
    assert slow.status == NO  # 40 tok/s


def test_decode_without_a_bandwidth_figure_is_not_measured():
    v = judge(target("batch-1 decode"), record([peer("tokenmill", c1=three())], None))
    assert v.status == NOT_MEASURED and "bandwidth not measured" in v.note


def test_another_workload_is_not_judged():
    tm = peer("tokenmill", c1=three(output_tok_s=60.0))
    ls = peer("llama-server", c1=three(output_tok_s=10.0))
    other = {"dataset": "random", "input_len": 50, "output_len": 128}
    verdicts = judge_all(record([tm, ls], workload=other))
    assert {v.status for v in verdicts} == {NOT_MEASURED}
    assert "input_len" in verdicts[0].note


def test_an_absent_peer_is_not_measured_not_failed():
    v = judge(target("output tok/s at concurrency 1", "transformers"), record([peer("tokenmill")]))
    assert v.status == NOT_MEASURED and "transformers was not in the run" in v.note


def test_a_ttft_only_run_judges_prefill_and_says_why_the_rest_are_not():
    tm = peer("tokenmill", p512=three(prompt=512.0, ttft_ms=100.0))
    ls = peer("llama-server", p512=three(prompt=512.0, ttft_ms=300.0))
    rec = record([tm, ls], workload={"dataset": "not run"})
    verdicts = {(v.target.figure, v.target.versus): v for v in judge_all(rec)}
    prefill = verdicts[("prefill tok/s, 512-token prompt", "llama-server")]
    assert prefill.status == YES and prefill.value.median == pytest.approx(5120.0)
    at_one = verdicts[("output tok/s at concurrency 1", "llama-server")]
    assert at_one.status == NOT_MEASURED and at_one.note == "the throughput suite was not run"


def test_a_throughput_run_with_other_prompts_is_not_judged():
    tm = peer("tokenmill", c1=three(output_tok_s=60.0))
    ls = peer("llama-server", c1=three(output_tok_s=40.0))
    rec = record([tm, ls], workload={"dataset": "random", "input_len": 50, "output_len": 128})
    v = judge(target("output tok/s at concurrency 1", "llama-server"), rec)
    assert v.status == NOT_MEASURED
    assert v.note == "the run's workload differs: input_len 50 (targets: 100)"
