"""The routes and middleware that let the server be watched: /metrics and, when they
are configured, the drift report, feedback and the web console.

`Observability` names what the CLI built from the settings; `install` mounts it on an
app. Nothing here runs on the request path except the HTTP status counter.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from tokenmill.errors import TokenmillError
from tokenmill.gateway.call_drift import DriftPolicy
from tokenmill.observability.drift import DriftReport
from tokenmill.observability.feedback import FeedbackStore
from tokenmill.observability.metrics import CONTENT_TYPE, Metrics
from tokenmill.server.feedback_routes import install_feedback
from tokenmill.server.http_metrics import HttpMetrics
from tokenmill.server.state import ServerState

if TYPE_CHECKING:  # OpenTelemetry is imported only when tracing is on
    from tokenmill.observability.tracing import Tracing


class NotEnabledError(TokenmillError):
    """An endpoint whose feature the server was started without (HTTP 404)."""

    status_code = 404
    error_type = "not_found_error"
    default_code = "not_enabled"


@dataclass
class Observability:
    """What the server exports; None parts are off."""

    metrics: Metrics | None = None
    tracing: Tracing | None = None
    drift: DriftPolicy | None = None
    feedback: FeedbackStore | None = None


def install(app: FastAPI, state: ServerState, obs: Observability) -> None:
    """Mounts the configured parts on `app`; mutates the app and the metrics registry."""
    if obs.metrics is not None:
        _install_metrics(app, state, obs.metrics)
    _install_drift(app, state, obs)
    _install_console(app)
    if obs.feedback is not None:
        install_feedback(app, obs.feedback, obs.metrics)
    else:
        _install_feedback_off(app)
    if obs.tracing is not None:
        from tokenmill.server.http_tracing import HttpTracing

        app.add_middleware(HttpTracing, tracing=obs.tracing)


def _install_metrics(app: FastAPI, state: ServerState, metrics: Metrics) -> None:
    def engines():
        if state.deployer is not None:
            return [
                (d.key, d.model.backend.engine.stats())
                for d in state.deployer.registry.deployments()
                if d.model is not None and hasattr(d.model.backend, "engine")
            ]
        engine = state.loaded_engine
        return [] if engine is None else [(engine.model_name, engine.stats())]

    def shadows():
        if state.deployer is None:
            return []
        return [
            (d.key, d.shadow_stats) for d in state.deployer.registry.deployments() if d.spec.shadow
        ]

    metrics.watch_engines(engines)
    metrics.watch_shadows(shadows)
    app.add_middleware(HttpMetrics, metrics=metrics)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def prometheus_metrics() -> Response:
        """Prometheus metrics (text format 0.0.4, whatever the Accept header asks, so the
        `tokenmill:` names stay as documented)."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)


def _install_drift(app: FastAPI, state: ServerState, obs: Observability) -> None:
    drift = obs.drift
    if drift is not None and obs.metrics is not None:
        drift.on_report = lambda report: _set_drift_gauges(obs.metrics, state, report)

    @app.get("/v1/monitoring/drift", tags=["monitoring"])
    async def drift_report() -> dict:
        """Each drift signal's score, p-value, threshold, window sizes and status, and
        the overall `status`: "collecting", "ok" or "drift"."""
        if drift is None:
            raise NotEnabledError(
                "Drift monitoring is off on this server; start it with --drift (and "
                "optionally --drift-profile FILE)."
            )
        report = await drift.report()
        return {**report.to_dict(), "feed": asdict(drift.stats)}


def _set_drift_gauges(metrics: Metrics, state: ServerState, report: DriftReport) -> None:
    model = state.model_name
    for signal in report.signals:
        if signal.score is not None:
            metrics.drift_score.labels(model, signal.name).set(signal.score)
        metrics.drift_alarm.labels(model, signal.name).set(1 if signal.status == "drift" else 0)


def _install_feedback_off(app: FastAPI) -> None:
    def refuse() -> None:
        raise NotEnabledError(
            "Feedback is off on this server; start it with --feedback-db FILE to store ratings."
        )

    app.add_api_route("/v1/feedback", refuse, methods=["GET", "POST"], include_in_schema=False)


UI_DIR = Path(__file__).with_name("ui")


def _install_console(app: FastAPI) -> None:
    """The web console's static files at /ui/ (open without a key: the page asks for
    one before it calls anything)."""

    @app.get("/ui", include_in_schema=False)
    async def console_root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    app.mount("/ui/", StaticFiles(directory=UI_DIR, html=True), name="console")
