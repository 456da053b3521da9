"""The routes and middleware that let the server be watched: /metrics and, when they
are configured, the drift report, feedback and the web console.

`Observability` names what the CLI built from the settings; `install` mounts it on an
app. Nothing here runs on the request path except the HTTP status counter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.responses import Response

from tokenmill.observability.metrics import CONTENT_TYPE, Metrics
from tokenmill.server.http_metrics import HttpMetrics
from tokenmill.server.state import ServerState

if TYPE_CHECKING:  # OpenTelemetry is imported only when tracing is on
    from tokenmill.observability.tracing import Tracing


@dataclass
class Observability:
    """What the server exports; None parts are off."""

    metrics: Metrics | None = None
    tracing: Tracing | None = None


def install(app: FastAPI, state: ServerState, obs: Observability) -> None:
    """Mounts the configured parts on `app`; mutates the app and the metrics registry."""
    if obs.metrics is not None:
        _install_metrics(app, state, obs.metrics)
    if obs.tracing is not None:
        from tokenmill.server.http_tracing import HttpTracing

        app.add_middleware(HttpTracing, tracing=obs.tracing)


def _install_metrics(app: FastAPI, state: ServerState, metrics: Metrics) -> None:
    def engines():
        engine = state.loaded_engine
        return [] if engine is None else [(engine.model_name, engine.stats())]

    metrics.watch_engines(engines)
    app.add_middleware(HttpMetrics, metrics=metrics)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def prometheus_metrics() -> Response:
        """Prometheus metrics (text format 0.0.4, whatever the Accept header asks, so the
        `tokenmill:` names stay as documented)."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)
