"""One optimization run: measure the base, produce the result, measure it, report.

Every command goes through `run`, so base and result are always measured the same way
and every output directory gets the same report.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenmill.model.loader import LoadedModel
from tokenmill.model.registry import DEFAULT_MODEL
from tokenmill.optimize import registration, tracking
from tokenmill.optimize.checkpoint import files_size, load_float, weights_size
from tokenmill.optimize.evaluation import EngineTarget, EvalConfig, EvalTarget, Evaluator
from tokenmill.optimize.fusion import fused_operations
from tokenmill.optimize.registration import RegisterTarget
from tokenmill.optimize.report import (
    MACHINE_LOAD,
    SERVED_ON,
    Report,
    base_served_on,
    load_base,
)


@dataclass(frozen=True)
class RunSpec:
    """What to run and where its results go."""

    command: str
    method: str
    model: str | None
    """As `tokenmill serve --model` takes it; None: the default packaged model."""
    out: Path
    params: dict[str, Any]
    eval_config: EvalConfig
    mlflow_uri: str | None = None
    mlflow_experiment: str = "tokenmill-optimize"
    mlflow_model: str | None = None
    """Registered model name in MLflow; None: the output directory's name."""
    register: RegisterTarget | None = None
    """Where to add the output as a new model version (--register), or None."""
    base_report: Path | None = None
    """An earlier report.json of the same model and evaluation settings whose base
    measurements to reuse instead of measuring the base again."""

    @property
    def model_name(self) -> str:
        return self.model or DEFAULT_MODEL


@dataclass
class Produced:
    """What a method wrote into the output directory."""

    details: dict[str, Any] = field(default_factory=dict)
    target: Callable[[], EvalTarget] | None = None
    """How to run the result for measurement; None: tokenmill's engine on the directory."""
    size_bytes: int | None = None
    """Bytes of the result's weights; None: every weight file in the directory."""


def run(spec: RunSpec, produce: Callable[[LoadedModel, Path], Produced]) -> Report:
    """Measures the base model, calls produce(float model, out dir), measures what it
    wrote, writes report.json / report.md into spec.out, then logs to MLflow and the
    registry when asked. Returns the report."""
    start = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    if spec.register is not None:
        registration.plan(spec.register, spec.out)  # raises before any work is done
    spec.out.mkdir(parents=True, exist_ok=True)
    evaluator = Evaluator(spec.eval_config)
    if spec.base_report is not None:
        base, reference = load_base(spec.base_report, spec.model_name, spec.eval_config)
        base_path = base_served_on(spec.base_report)
    else:
        base_target = EngineTarget(spec.model, spec.eval_config.throughput_batch)
        base, reference = evaluator.evaluate(base_target, weights_size(spec.model), None)
        base_path = base_target.kernel_path
        del base_target
        gc.collect()

    produced = produce(load_float(spec.model), spec.out)
    gc.collect()
    if produced.target is not None:
        target = produced.target()
    else:
        target = EngineTarget(str(spec.out), spec.eval_config.throughput_batch)
    size = produced.size_bytes if produced.size_bytes is not None else files_size(spec.out)
    result, _ = evaluator.evaluate(target, size, reference)
    details = dict(produced.details)
    details[SERVED_ON] = {
        "base": base_path,
        "result": target.kernel_path,
    }
    if spec.command == "quantize" and isinstance(target, EngineTarget):
        details["layer fusion (what the engine fuses when serving this output)"] = fused_operations(
            target.llm.engine.loaded.model
        )
    del target
    gc.collect()
    # Throughput depends on what else the machine runs; quality does not.
    details[MACHINE_LOAD] = {
        "CPUs": os.cpu_count(),
        "1-min load average at start": round(load_at_start, 2),
        "at end": round(os.getloadavg()[0], 2),
    }
    report = Report(
        command=spec.command,
        method=spec.method,
        model=spec.model_name,
        output=str(spec.out),
        params=spec.params,
        base=base,
        result=result,
        eval_config=spec.eval_config,
        details=details,
        base_greedy=reference,
    )
    report.elapsed_s = time.perf_counter() - start
    report.write(spec.out)
    if spec.mlflow_uri:
        name = spec.mlflow_model or spec.out.resolve().name
        report.details["mlflow"] = tracking.log_to_mlflow(
            report, spec.out, spec.mlflow_uri, spec.mlflow_experiment, name
        )
        report.write(spec.out)
    if spec.register is not None:
        report.details["registry"] = registration.register(spec.register, spec.out).to_json()
        report.write(spec.out)
    return report
