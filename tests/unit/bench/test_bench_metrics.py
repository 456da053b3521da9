"""Metric math on synthetic timings: exact percentiles, throughput, TPOT, goodput."""

from __future__ import annotations

import pytest

from tokenmill.bench.metrics import SLO, LatencyStats, RequestResult, summarize


def make_result(
    ttft: float = 0.1,
    e2e: float = 1.0,
    output_tokens: int = 10,
    prompt_tokens: int = 100,
    success: bool = True,
    error: str = "",
) -> RequestResult:
    gaps = [(e2e - ttft) / (output_tokens - 1)] * (output_tokens - 1) if output_tokens > 1 else []
    return RequestResult(
        success=success,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        ttft=ttft,
        e2e=e2e,
        itl=gaps,
        error=error,
    )


def test_percentiles_interpolate_linearly_between_ranks():
    stats = LatencyStats.of_seconds([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert stats.count == 100
    assert stats.mean == pytest.approx(50.5)
    assert stats.p50 == pytest.approx(50.5)
    assert stats.p90 == pytest.approx(90.1)
    assert stats.p99 == pytest.approx(99.01)


def test_percentiles_of_few_samples():
    stats = LatencyStats.of_seconds([0.010, 0.030])
    assert (stats.p50, stats.p90, stats.p99) == pytest.approx((20.0, 28.0, 29.8))


def test_no_samples_give_zeros():
    assert LatencyStats.of_seconds([]) == LatencyStats(0.0, 0.0, 0.0, 0.0, 0)


def test_tpot_excludes_the_first_token():
    r = make_result(ttft=0.2, e2e=2.2, output_tokens=11)
    assert r.tpot == pytest.approx(0.2)
    assert make_result(output_tokens=1, e2e=0.1).tpot is None


def test_throughputs_count_successful_requests_only():
    results = [
        make_result(output_tokens=10, prompt_tokens=100),
        make_result(output_tokens=30, prompt_tokens=50),
        make_result(success=False, output_tokens=0, prompt_tokens=999, error="HTTP 500: boom"),
    ]
    m = summarize(results, duration_s=4.0, slo=SLO())
    assert (m.completed, m.failed) == (2, 1)
    assert m.total_input_tokens == 150
    assert m.total_output_tokens == 40
    assert m.request_throughput == pytest.approx(0.5)
    assert m.output_throughput == pytest.approx(10.0)
    assert m.total_token_throughput == pytest.approx(47.5)
    assert m.goodput is None
    assert m.errors == ["HTTP 500: boom"]
    assert m.itl.count == 9 + 29


def test_goodput_counts_requests_meeting_every_slo():
    results = [
        make_result(ttft=0.1, e2e=1.0, output_tokens=10),  # TPOT 100 ms: good
        make_result(ttft=0.5, e2e=1.4, output_tokens=10),  # TTFT too slow
        make_result(ttft=0.1, e2e=3.1, output_tokens=11),  # TPOT 300 ms: too slow
        make_result(ttft=0.1, e2e=0.1, output_tokens=1),  # one token: no TPOT, good
        make_result(success=False, output_tokens=0, error="x"),
    ]
    m = summarize(results, duration_s=2.0, slo=SLO(ttft_ms=200, tpot_ms=150))
    assert m.goodput == pytest.approx(1.0)  # 2 good / 2 s


def test_distinct_errors_are_kept_and_bounded():
    results = [make_result(success=False, error=f"e{i % 7}") for i in range(20)]
    m = summarize(results, 1.0, SLO())
    assert m.errors == ["e0", "e1", "e2", "e3", "e4"]
    assert m.completed == 0 and m.output_throughput == 0.0


def test_invalid_inputs_are_refused():
    with pytest.raises(ValueError):
        SLO(ttft_ms=0)
    with pytest.raises(ValueError):
        summarize([], 0.0, SLO())
