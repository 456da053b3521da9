"""Where a finished run goes besides its directory: MLflow (tokenmill's own model
registry is `registration.py`).

`log_to_mlflow` records the run (parameters, base and result metrics, the report and
the servable directory as artefacts) and registers the directory as a new version of a
registered model. Any MLflow tracking URI works; a registry needs a database store
(e.g. `sqlite:///mlflow.db`).
"""

from __future__ import annotations

from pathlib import Path

from tokenmill.optimize.report import Report


def log_to_mlflow(
    report: Report, out: Path, tracking_uri: str, experiment: str, model_name: str
) -> dict[str, str]:
    """Logs one run and registers `out` as a new version of `model_name`. Returns the
    run id and the registered version. Imports mlflow here: it is an optional extra."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=f"{report.command}-{report.method}") as run:
        mlflow.log_params(
            {
                "command": report.command,
                "method": report.method,
                "model": report.model,
                **{k: str(v) for k, v in report.params.items()},
            }
        )
        metrics = {f"base_{k}": float(v) for k, v in report.base.to_dict().items()}
        metrics |= {f"result_{k}": float(v) for k, v in report.result.to_dict().items()}
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(out / "report.json"))
        mlflow.log_artifact(str(out / "report.md"))
        for f in sorted(out.iterdir()):  # training checkpoints stay out of the model
            if f.is_file():
                mlflow.log_artifact(str(f), artifact_path="model")
        source = f"{run.info.artifact_uri}/model"
        run_id = run.info.run_id
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        client.get_registered_model(model_name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(model_name, description="tokenmill optimize outputs")
    version = client.create_model_version(
        model_name,
        source,
        run_id=run_id,
        description=f"tokenmill optimize {report.command} --method {report.method}",
        tags={
            "perplexity": f"{report.result.perplexity:.4f}",
            "base_perplexity": f"{report.base.perplexity:.4f}",
        },
    )
    return {"run_id": run_id, "registered_model": model_name, "version": str(version.version)}
