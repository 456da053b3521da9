"""The server's shared state: the engine once loaded, the lifecycle phase, the served name."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
import uuid
from collections.abc import Callable

from pydantic import BaseModel

from tokenmill.config import ServerConfig
from tokenmill.errors import InvalidRequestError, ModelNotFoundError
from tokenmill.gateway.backend import LocalBackend
from tokenmill.gateway.call import Caller
from tokenmill.gateway.engine_client import EngineClient
from tokenmill.gateway.pipeline import Pipeline
from tokenmill.gateway.router import SingleModelRouter
from tokenmill.protocol.common import unknown_fields
from tokenmill.server.errors import ServiceUnavailableError

logger = logging.getLogger(__name__)
MAX_LOGGED_FIELDS = 256


class Phase(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    DRAINING = "draining"
    RESTARTING = "restarting"


WATCH_INTERVAL_S = 0.5
MAX_RESTARTS = 3
"""Engine restarts allowed within RESTART_WINDOW_S; one more and the process exits."""
RESTART_WINDOW_S = 600.0


class ServerState:
    """Owns the engine's lifecycle on behalf of the app: load, serve, drain, close.

    The model loads on a worker thread after the server starts listening, so /health
    answers at once and /ready turns 200 only when the engine is loaded and warm.
    """

    def __init__(
        self,
        config: ServerConfig,
        engine_factory: Callable[[], EngineClient],
        on_ready: Callable[[EngineClient, float], None] | None = None,
        on_fatal: Callable[[BaseException], None] | None = None,
        pipeline_factory: Callable[[EngineClient], Pipeline] | None = None,
        deployer=None,
    ):
        self.config = config
        self.deployer = deployer
        """The model registry's deployer under --models (None: one model)."""
        self._pipeline_factory = pipeline_factory or self._plain_pipeline
        self._pipeline: Pipeline | None = None
        self.anonymous_caller = Caller()
        self.phase = Phase.LOADING
        self.created = int(time.time())
        self._factory = engine_factory
        self._on_ready = on_ready
        self._on_fatal = on_fatal
        self._engine: EngineClient | None = None
        self._drain_task: asyncio.Task | None = None
        self._watchdog: asyncio.Task | None = None
        self._restarts: list[float] = []
        self.engine_died = False
        """Set when the engine thread died and the process is to exit (not restart)."""
        self._unknown_fields_logged: set[tuple[str, str]] = set()
        self._unknown_fields_capped = False
        self.load_error: BaseException | None = None

    async def load(self) -> None:
        """Builds the engine off the event loop, starts it, then flips to READY.

        A failure is kept in `load_error`, logged, and handed to `on_fatal`.
        """
        started = time.perf_counter()
        try:
            build = asyncio.ensure_future(asyncio.to_thread(self._factory))
            try:
                engine = await asyncio.shield(build)
            except asyncio.CancelledError:
                # Stopped while loading: the loading thread cannot be interrupted, and one
                # still inside torch when the interpreter exits aborts the process. Wait
                # for it, then let go of what it built.
                with contextlib.suppress(Exception):
                    await build
                raise
            try:
                await engine.start()
            except asyncio.CancelledError:
                # Stopped while warming up: the engine thread must not outlive the loop
                # (a thread killed inside torch at exit aborts the process).
                await asyncio.shield(engine.shutdown(grace_s=0))
                raise
        except Exception as exc:  # noqa: BLE001 - any load failure is fatal and reported
            self.phase = Phase.FAILED
            self.load_error = exc
            logger.error("could not load the model: %s", exc)
            if self._on_fatal is not None:
                self._on_fatal(exc)
            return
        self._engine = engine
        try:
            if self.deployer is not None:
                await self.deployer.start(engine)
            self._pipeline = await asyncio.to_thread(self._pipeline_factory, engine)
        except Exception as exc:  # noqa: BLE001 - a policy that cannot load is fatal too
            self.phase = Phase.FAILED
            self.load_error = exc
            logger.error("could not load the models or build the request pipeline: %s", exc)
            if self._on_fatal is not None:
                self._on_fatal(exc)
            return
        if self.phase is Phase.LOADING:
            self.phase = Phase.READY
            self._watchdog = asyncio.ensure_future(self._watch_engine())
        if self._on_ready is not None:
            self._on_ready(engine, time.perf_counter() - started)

    @property
    def engine(self) -> EngineClient:
        """The engine, or a 503 that says why there is none to serve this request."""
        if self.phase is Phase.READY and self._engine is not None:
            return self._engine
        if self.phase is Phase.DRAINING:
            raise ServiceUnavailableError(
                "The server is shutting down and takes no new requests; retry on another "
                "replica or once it is back.",
                code="shutting_down",
                retry_after_s=1.0,
            )
        if self.phase is Phase.RESTARTING:
            raise ServiceUnavailableError(
                "The engine failed and is restarting; retry shortly.",
                code="engine_restarting",
                retry_after_s=2.0,
            )
        if self.phase is Phase.FAILED:
            raise ServiceUnavailableError(
                f"The model failed to load: {self.load_error}", code="model_load_failed"
            )
        raise ServiceUnavailableError(
            "The model is still loading; retry when GET /ready answers 200.",
            code="model_loading",
            retry_after_s=2.0,
        )

    @property
    def pipeline(self) -> Pipeline:
        """The request pipeline over the engine; the same 503s as `engine`."""
        self.engine  # noqa: B018 - raises the 503 that says why there is none
        assert self._pipeline is not None
        return self._pipeline

    def _plain_pipeline(self, engine: EngineClient) -> Pipeline:
        """No policies: the engine, its one model, the request timeout."""
        backend = LocalBackend(engine, timeout_s=self.config.request_timeout)
        return Pipeline(SingleModelRouter(engine.model_name, backend))

    @property
    def loaded_engine(self) -> EngineClient | None:
        """The engine if it has loaded, whatever the phase (stats during a drain)."""
        return self._engine

    @property
    def model_name(self) -> str:
        """The name clients send as `model` and see in responses."""
        return self._engine.model_name if self._engine is not None else "unknown"

    def check_model(self, requested: str | None) -> None:
        """Raises a 404 unless `requested` is omitted or names the served model (or,
        under --models, one of its versions); before the model has loaded (or while
        draining), the 503 that says why none is served."""
        self.engine  # noqa: B018 - raises the 503 while there is no model to serve
        if requested is None or requested == self.model_name:
            return
        if self.deployer is not None and requested.partition("@")[0] == self.model_name:
            return
        raise ModelNotFoundError(
            f"The model {requested!r} does not exist on this server; it serves "
            f"{self.model_name!r} (see GET /v1/models)."
        )

    def unknown_fields(self, endpoint: str, body: BaseModel) -> list[str]:
        """The fields of `body` the API does not know. Under --strict-fields they are
        refused (400 `unknown_field`); otherwise they are ignored, named in the response's
        x-tokenmill-ignored-fields header, and logged once per endpoint and name.

        At most MAX_LOGGED_FIELDS names are remembered, so clients inventing field names
        cannot grow this set without bound; past that, one last line says so.
        """
        names = unknown_fields(body)
        if names and self.config.strict_fields:
            raise InvalidRequestError(
                f"Unknown field(s) {', '.join(names)}: this server refuses fields it does not "
                "know (--strict-fields). Remove them or check their spelling.",
                param=names[0],
                code="unknown_field",
            )
        for name in names:
            key = (endpoint, name)
            if key in self._unknown_fields_logged:
                continue
            if len(self._unknown_fields_logged) >= MAX_LOGGED_FIELDS:
                if not self._unknown_fields_capped:
                    self._unknown_fields_capped = True
                    logger.warning("more unknown request fields arrive; no longer logging them")
                break
            self._unknown_fields_logged.add(key)
            logger.warning("ignoring unknown field %r in %s requests", name, endpoint)
        return names

    @staticmethod
    def new_request_id(prefix: str) -> str:
        """A fresh id such as `chatcmpl-3f2a...`."""
        return f"{prefix}-{uuid.uuid4().hex}"

    def health(self) -> tuple[bool, str]:
        """(healthy, status) for /health: unhealthy when the model failed to load, or the
        engine thread is dead, or work waits and the engine has not stepped within
        --engine-stall-timeout."""
        if self.phase is Phase.FAILED:
            return False, "failed"
        if self.phase is Phase.RESTARTING:
            return False, "engine_restarting"
        probe = getattr(self._engine, "health", None)
        if probe is None or self.phase is Phase.DRAINING:
            return True, "ok"
        health = probe()
        if not health.alive:
            return False, "engine_dead"
        if health.stalled(self.config.engine_stall_timeout):
            return False, "engine_stalled"
        return True, "ok"

    async def _watch_engine(self) -> None:
        """Notices a dead engine thread and restarts it, or exits (--on-engine-failure)."""
        engine = self._engine
        while self.phase in (Phase.READY, Phase.RESTARTING) and engine is not None:
            await asyncio.sleep(WATCH_INTERVAL_S)
            probe = getattr(engine, "health", None)
            if probe is None or self.phase is not Phase.READY or probe().alive:
                continue
            failure = probe().failure or "the thread ended"
            now = time.monotonic()
            self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW_S]
            if self.config.on_engine_failure == "exit" or len(self._restarts) >= MAX_RESTARTS:
                logger.error("the engine thread died (%s): exiting", failure)
                self.engine_died = True
                self.phase = Phase.FAILED
                self.load_error = RuntimeError(f"the engine thread died: {failure}")
                if self._on_fatal is not None:
                    self._on_fatal(self.load_error)
                return
            logger.error("the engine thread died (%s): restarting it", failure)
            self.phase = Phase.RESTARTING
            self._restarts.append(now)
            try:
                await engine.restart()
            except Exception as exc:  # cannot restart: exit instead
                logger.exception("could not restart the engine")
                self.engine_died = True
                self.phase = Phase.FAILED
                self.load_error = exc
                if self._on_fatal is not None:
                    self._on_fatal(exc)
                return
            if self.phase is Phase.RESTARTING:
                self.phase = Phase.READY
                logger.info("engine restarted")

    def begin_drain(self) -> asyncio.Task | None:
        """Stops taking requests (503 with Retry-After) and asks the engine to finish
        in-flight ones within the grace period (what is left after it is ended with an
        error). Returns the drain task, None if there is no engine to drain. Safe to
        call more than once."""
        if self._drain_task is not None:
            return self._drain_task
        if self.phase is not Phase.FAILED:
            self.phase = Phase.DRAINING
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._engine is not None:
            grace = self.config.shutdown_grace
            self._drain_task = asyncio.ensure_future(self._engine.shutdown(grace_s=grace))
        return self._drain_task

    async def close(self) -> None:
        """Waits for the drain (or shuts the engine down at once if none began)."""
        self.begin_drain()
        if self._drain_task is not None:
            try:
                await self._drain_task
            except Exception:
                logger.exception("engine shutdown failed")
        if self.deployer is not None:
            await self.deployer.close()
