"""End-to-end runs of `tokenmill optimize` on the default model, with the test suite's
smoke evaluation. The first run (int8, logged to a temporary SQLite MLflow store)
measures the base model; the others reuse its base figures through --base-report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokenmill.cli.main import main


def optimize(out: Path, *args: str) -> dict:
    """Runs one command with --eval smoke; returns its report.json."""
    code = main(["optimize", *args, "-o", str(out), "--eval", "smoke"])
    assert code == 0
    return json.loads((out / "report.json").read_text())


@pytest.fixture(scope="session")
def int8_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("int8")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    report = optimize(
        root / "out",
        "quantize",
        "--method",
        "int8",
        "--calib-tokens",
        "512",
        "--mlflow",
        uri,
        "--mlflow-model",
        "smol-int8",
    )
    return root / "out", report, uri


@pytest.fixture(scope="session")
def base_report(int8_run) -> str:
    return str(int8_run[0] / "report.json")


@pytest.fixture(scope="session")
def student_run(tmp_path_factory, base_report):
    """A 15-layer student distilled for 3 steps: its own test checks it, and the int4 test
    quantizes it (its trained weights are off the packaged Q4_1 grid)."""
    out = tmp_path_factory.mktemp("student")
    report = optimize(
        out,
        "distill",
        "--layers",
        "15",
        "--steps",
        "3",
        "--seq-len",
        "32",
        "--batch-size",
        "2",
        "--checkpoint-every",
        "2",
        "--no-progress",
        "--base-report",
        base_report,
    )
    return out, report
