"""The report's measurements and files."""

import json

import pytest

from tokenmill.optimize.evaluation import QUICK, Metrics, common_prefix_ratio
from tokenmill.optimize.report import Report, load_base


def test_common_prefix_ratio_stops_at_the_first_difference():
    assert common_prefix_ratio([1, 2, 3, 4], [1, 2, 9, 4]) == 0.5
    assert common_prefix_ratio([1, 2], [1, 2, 3, 4]) == 0.5
    assert common_prefix_ratio([], []) == 1.0


def _metrics(ppl: float) -> Metrics:
    return Metrics(
        perplexity=ppl,
        accuracy=0.5,
        agreement=1.0,
        size_bytes=10**8,
        memory_bytes=2 * 10**8,
        tok_s_batch1=10.0,
        tok_s_batch32=100.0,
    )


def test_report_files_have_base_and_result_with_the_same_keys(tmp_path):
    report = Report(
        "quantize",
        "int8",
        "m",
        str(tmp_path),
        {"alpha": 0.5},
        _metrics(20.0),
        _metrics(20.4),
        QUICK,
        {"fusion": ["qkv"]},
        3.0,
        [[1, 2]],
    )
    report.write(tmp_path)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["base"].keys() == saved["result"].keys()
    assert {
        "perplexity",
        "accuracy",
        "agreement",
        "size_bytes",
        "tok_s_batch1",
        "tok_s_batch32",
    } <= saved["result"].keys()
    md = (tmp_path / "report.md").read_text()
    assert "| perplexity (held-out text, lower is better) | 20.000 | 20.400 | +2.0% |" in md
    base, greedy = load_base(tmp_path / "report.json", "m", QUICK)
    assert base == _metrics(20.0) and greedy == [[1, 2]]
    with pytest.raises(ValueError, match="measured 'm'"):
        load_base(tmp_path / "report.json", "other", QUICK)
