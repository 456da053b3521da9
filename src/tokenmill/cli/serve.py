"""`tokenmill serve`: uvicorn and the engine in one process, with a graceful SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Iterator
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

    app = build_app(
        server_config,
        lambda: AsyncEngine.from_config(config.engine),
        on_ready=on_ready,
        on_fatal=on_fatal,
        pipeline_factory=lambda engine: build_pipeline(engine, config, redis),
        keys=keys,
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
    return exit_code
