"""`tokenmill serve`: uvicorn and the engine in one process, with a graceful SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
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
from tokenmill.server.connections import ConnectionLimits, guarded_protocol
from tokenmill.server.state import ServerState

logger = logging.getLogger("tokenmill.serve")


EXIT_ENGINE_DIED = 3
"""Exit status when the engine thread died and --on-engine-failure is exit."""


class _Server(uvicorn.Server):
    """uvicorn's server with tokenmill's shutdown: on SIGTERM or Ctrl-C the engine's
    drain starts at once (in-flight requests get the grace period, then end with an
    error) while the listener stays open answering new requests 503 with Retry-After;
    once the drain is over the listener closes, and the process exits 0 instead of
    re-raising the signal. A second Ctrl-C exits at once."""

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
        if self._loop is None:
            self.should_exit = True
            return
        self._loop.call_soon_threadsafe(self._drain_then_exit)

    def _drain_then_exit(self) -> None:
        """Runs on the loop: start the drain; close the listener when it is over."""
        task = self.state.begin_drain()
        if task is None or task.done():
            self.should_exit = True
            return
        task.add_done_callback(lambda _: setattr(self, "should_exit", True))


def raise_descriptor_limit() -> int:
    """Raises this process's open-file limit to its hard limit (every connection holds a
    descriptor); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:  # a sandbox may refuse: keep the old limit
            logger.warning("could not raise the open-file limit from %d: %s", soft, exc)
    return soft


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


def registry_deployer(config: AppConfig):
    """The deployer for --models FILE, and the engine config of the file's first
    generate model (the server loads it as its own engine; the deployer loads the rest).
    ConfigError for a file without a generate model or with an unknown source."""
    import dataclasses

    from tokenmill.gateway import model_loader
    from tokenmill.gateway.deployer import Deployer
    from tokenmill.gateway.models_file import read_models_file, read_state

    specs = read_models_file(config.registry.models)
    state_path = config.registry.registry_state or f"{config.registry.models}.state.json"
    saved = read_state(state_path)
    if saved is not None:
        logger.info("serving the registry state saved in %s (delete it to reset)", state_path)
        specs = saved
    first = next((s for s in specs if s.task == "generate"), None)
    if first is None:
        raise ConfigError('the models file needs at least one task = "generate" model.', "models")
    for spec in specs:
        model_loader.estimate_bytes(spec)  # an unknown source fails before loading
    ordered = [first, *(s for s in specs if s is not first)]
    model = dataclasses.replace(
        config.engine.model,
        model=first.source,
        dtype=first.dtype,
        quantization=first.quantization,
        served_model_name=first.name,
    )
    budget = config.registry.memory_budget_gib

    def adopt(engine):
        loaded = model_loader.engine_model(engine, config.server.request_timeout)
        loaded.close = lambda: None  # the server drains its own engine
        return loaded

    # Under --ray every replica builds this registry from the same files: none may write
    # the state file, and the admin API may not change one replica's copy.
    replicated = config.ray.enabled
    deployer = Deployer(
        lambda spec: model_loader.load(spec, config),
        estimate=lambda spec: model_loader.estimate_bytes(spec, config),
        memory_budget_bytes=int(budget * 2**30) if budget else None,
        initial=ordered,
        adopt_engine=adopt,
        state_path=None if replicated else state_path,
        frozen=(
            "Under --ray every replica serves its own copy of the models file, so the admin "
            "API cannot change versions or traffic: edit the models file and redeploy "
            "(docs/ray.md)."
            if replicated
            else None
        ),
    )
    return deployer, dataclasses.replace(config.engine, model=model)


def build_serve_app(config: AppConfig, redis, on_ready=None, on_fatal=None):
    """The FastAPI app `tokenmill serve` runs (the engine, or the --models registry,
    behind the gateway's pipeline), and its Observability. Ray Serve replicas build
    theirs here too. `redis` is the --redis-url client or None."""
    from tokenmill.engine.async_engine import AsyncEngine
    from tokenmill.gateway.assemble import (
        build_pipeline,
        build_registry_pipeline,
        semantic_embedder,
    )
    from tokenmill.gateway.auth import KeyStore

    keys = KeyStore.from_settings(config.gateway.api_key, config.gateway.keys)
    observability, observers = build_observability(config)
    tracer = obs_tracer(observability)
    deployer = None
    engine_config = config.engine
    # The pipeline is built on the loading thread once the model is in: the semantic
    # cache's encoder (when on) loads there too.
    pipeline_factory = lambda engine: build_pipeline(
        engine, config, redis, semantic_embedder(config), observers, tracer
    )
    if config.registry.models:
        deployer, engine_config = registry_deployer(config)
        pipeline_factory = lambda engine: build_registry_pipeline(
            deployer.registry, config, redis, semantic_embedder(config), observers, tracer
        )
    app = build_app(
        config.server,
        lambda: AsyncEngine.from_config(engine_config),
        on_ready=on_ready,
        on_fatal=on_fatal,
        pipeline_factory=pipeline_factory,
        keys=keys,
        observability=observability,
        batch=config.batch,
        deployer=deployer,
        admin_open=config.registry.admin_open,
    )
    return app, observability


def serve(config: AppConfig) -> int:
    """Runs the server until SIGTERM/SIGINT; returns the process exit code (0 after a
    graceful shutdown, 1 if the model failed to load, 3 if the engine thread died and
    --on-engine-failure is exit)."""
    from tokenmill.gateway.assemble import redis_client
    from tokenmill.model.registry import resolve_model

    if config.ray.enabled:
        from tokenmill.ray.app import run

        return run(config)
    server_config = config.server
    sock = bind_socket(server_config.host, server_config.port)
    if not config.registry.models:
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
        exit_code = EXIT_ENGINE_DIED if app.state.tokenmill.engine_died else 1
        if server is not None:
            server.should_exit = True

    app, observability = build_serve_app(config, redis, on_ready, on_fatal)
    uv_config = uvicorn.Config(
        app,
        log_config=None,
        log_level=server_config.log_level,
        access_log=server_config.access_log,
        timeout_graceful_shutdown=int(server_config.shutdown_grace) + 5,
        timeout_keep_alive=server_config.keep_alive_timeout,
        http=guarded_protocol(
            ConnectionLimits(
                header_timeout_s=server_config.header_timeout,
                body_timeout_s=server_config.body_timeout,
                max_connections=server_config.max_connections,
                max_header_bytes=server_config.max_header_bytes,
            )
        ),
        h11_max_incomplete_event_size=server_config.max_header_bytes,
    )
    limit = raise_descriptor_limit()
    if limit < server_config.max_connections + 64:
        logger.warning(
            "the open-file limit (%d) is below --max-connections (%d) plus headroom; "
            "connections past it will fail",
            limit,
            server_config.max_connections,
        )
    server = _Server(uv_config, app.state.tokenmill)
    server.run(sockets=[sock])
    if observability.tracing is not None:
        observability.tracing.shutdown()  # exports the spans still batched
    return exit_code
