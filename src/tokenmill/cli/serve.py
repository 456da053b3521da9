"""`tokenmill serve`: uvicorn and the engine in one process, with a graceful SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import uvicorn

from tokenmill.config import AppConfig
from tokenmill.errors import ConfigError
from tokenmill.server.app import build_app
from tokenmill.server.state import ServerState

logger = logging.getLogger("tokenmill.serve")


class _Server(uvicorn.Server):
    """uvicorn's server with tokenmill's shutdown: on SIGTERM or Ctrl-C it stops
    listening and starts the engine's drain at once (in-flight requests get the grace
    period, then are aborted), and the process exits 0 instead of re-raising the signal."""

    def __init__(self, config: uvicorn.Config, state: ServerState):
        super().__init__(config)
        self.state = state
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
            return
        logger.info(
            "received %s: draining (grace %.0f s)",
            signal.Signals(sig).name,
            self.state.config.shutdown_grace,
        )
        self.should_exit = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.state.begin_drain)


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the model loads so that a busy port is
    reported at once (ConfigError), not after a minute of loading."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror}. Choose another --port or stop "
            "the process using it.",
            setting="port",
        ) from None
    sock.set_inheritable(True)
    return sock


def build_observability(config: AppConfig, tracing=None, drift_embedder=None):
    """The exported parts the settings turn on, and the policies that feed them.
    `tracing` (a Tracing) replaces the OTLP one --otlp-endpoint would make, and
    `drift_embedder` the sentence encoder drift would load (tests)."""
    from tokenmill.gateway.call_metrics import CallMetricsPolicy
    from tokenmill.observability.metrics import Metrics
    from tokenmill.server.observability import Observability

    obs, observers = Observability(), []
    if config.observability.metrics:
        obs.metrics = Metrics()
        observers.append(CallMetricsPolicy(obs.metrics))
    if tracing is None and config.observability.otlp_endpoint:
        from tokenmill.observability.tracing import Tracing

        tracing = Tracing.otlp(config.observability.otlp_endpoint)
    if tracing is not None:
        from tokenmill.gateway.call_tracing import CallTracingPolicy

        obs.tracing = tracing
        observers.append(CallTracingPolicy(tracing))
    if config.observability.drift:
        obs.drift = drift_policy(config, drift_embedder)
        observers.append(obs.drift)
    if config.observability.feedback_db:
        from tokenmill.gateway.call_feedback import FeedbackPolicy
        from tokenmill.observability.feedback import FeedbackStore

        obs.feedback = FeedbackStore(config.observability.feedback_db)
        observers.append(FeedbackPolicy(obs.feedback))
    return obs, observers


def drift_policy(config: AppConfig, embedder=None):
    """The drift policy over a monitor of the --drift-* settings; loads the sentence
    encoder (about a second) unless `embedder` is given, and the --drift-profile."""
    from tokenmill.gateway.call_drift import DriftPolicy
    from tokenmill.observability.drift import DriftMonitor, Profile

    encoder = None
    if embedder is None:
        from tokenmill.engine.embedding import EmbeddingService
        from tokenmill.gateway.assemble import ServiceEmbedder

        service = EmbeddingService.from_config(config.embedding)
        service.start()
        embedder, encoder = ServiceEmbedder(service), service.model_name
    path = config.observability.drift_profile
    if path and not Path(path).is_file():
        raise ConfigError(f"--drift-profile {path}: no such file.", setting="drift_profile")
    profile = Profile.load(path) if path else None
    return DriftPolicy(DriftMonitor(config.drift, profile, encoder), embedder)


def obs_tracer(observability):
    """The tracer the pipeline spans policies with, or None when tracing is off."""
    return observability.tracing.tracer if observability.tracing is not None else None


def serve(config: AppConfig) -> int:
    """Runs the server until SIGTERM/SIGINT; returns the process exit code (0 after a
    graceful shutdown, 1 if the model failed to load)."""
    from tokenmill.engine.async_engine import AsyncEngine
    from tokenmill.gateway.assemble import build_pipeline, redis_client
    from tokenmill.gateway.auth import KeyStore
    from tokenmill.model.registry import resolve_model

    server_config = config.server
    keys = KeyStore.from_settings(config.gateway.api_key, config.gateway.keys)
    sock = bind_socket(server_config.host, server_config.port)
    resolve_model(config.engine.model.model)  # an unknown model fails before loading
    redis = redis_client(config.gateway.redis_url)
    exit_code = 0
    server: _Server | None = None

    def on_ready(engine, load_s: float) -> None:
        precision = getattr(engine, "precision", None)
        detail = f"; {precision.describe()}" if precision is not None else ""
        print(
            f"tokenmill: serving {engine.model_name} at {server_config.base_url} "
            f"(model loaded and warmed in {load_s:.1f} s{detail}; Ctrl-C to stop)",
            flush=True,
        )

    def on_fatal(error: BaseException) -> None:
        nonlocal exit_code
        print(f"tokenmill: error: {error}", file=sys.stderr, flush=True)
        exit_code = 1
        if server is not None:
            server.should_exit = True

    observability, observers = build_observability(config)
    app = build_app(
        server_config,
        lambda: AsyncEngine.from_config(config.engine),
        on_ready=on_ready,
        on_fatal=on_fatal,
        pipeline_factory=lambda engine: build_pipeline(
            engine, config, redis, None, observers, obs_tracer(observability)
        ),
        keys=keys,
        observability=observability,
        batch=config.batch,
    )
    uv_config = uvicorn.Config(
        app,
        log_config=None,
        log_level=server_config.log_level,
        access_log=server_config.access_log,
        timeout_graceful_shutdown=int(server_config.shutdown_grace) + 5,
        timeout_keep_alive=5,
    )
    server = _Server(uv_config, app.state.tokenmill)
    server.run(sockets=[sock])
    if observability.tracing is not None:
        observability.tracing.shutdown()  # exports the spans still batched
    return exit_code
