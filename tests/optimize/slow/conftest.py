"""End-to-end runs of `tokenmill optimize` on the default model, with the quick
evaluation. The first run (int8, logged to a temporary SQLite MLflow store) measures
the base model; the others reuse its base figures through --base-report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokenmill.cli.main import main


def optimize(out: Path, *args: str) -> dict:
    """Runs one command with --eval quick; returns its report.json."""
    code = main(["optimize", *args, "-o", str(out), "--eval", "quick"])
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
