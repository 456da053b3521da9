"""Fallbacks: when the model cannot take a call, the next target answers it.

A call the primary refuses for overload (queue full), or that fails or times out
before its first output, is started on the next target in order: another served model,
or a remote OpenAI-compatible server. A circuit breaker per target skips one that keeps
failing for a cool-down, then lets one call through to probe it. Once a target has
produced output the call stays with it: nothing is sent twice.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from tokenmill.errors import (
    EngineDeadError,
    QueueFullError,
    RequestTimeoutError,
    ServiceUnavailableError,
    TokenmillError,
)
from tokenmill.gateway.backend import Backend, BackendStream
from tokenmill.gateway.policy import CallContext, Prepared

logger = logging.getLogger(__name__)
RETRYABLE = (QueueFullError, EngineDeadError, RequestTimeoutError, ServiceUnavailableError)


def is_retryable(exc: BaseException) -> bool:
    """Overload, a dead engine, a timeout, an unreachable or failing server."""
    if isinstance(exc, RETRYABLE):
        return True
    return isinstance(exc, TokenmillError) and (exc.status_code >= 500 or exc.status_code == 429)


@dataclass
class CircuitBreaker:
    """Closed (use it) until `failures` consecutive failures, then open for
    `cooldown_s`, then half-open: one probe call decides."""

    failures: int = 3
    cooldown_s: float = 30.0
    _consecutive: int = 0
    _opened_at: float | None = None

    def available(self, now: float | None = None) -> bool:
        if self._opened_at is None:
            return True
        now = time.monotonic() if now is None else now
        return now - self._opened_at >= self.cooldown_s

    def record(self, ok: bool, now: float | None = None) -> None:
        if ok:
            self._consecutive, self._opened_at = 0, None
            return
        self._consecutive += 1
        if self._consecutive >= self.failures or self._opened_at is not None:
            self._opened_at = time.monotonic() if now is None else now

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half_open" if self.available() else "open"


class FallbackBackend:
    """The primary backend, then each target in order, each behind its breaker."""

    def __init__(
        self, primary: Backend, targets: list[Backend], failures: int = 3, cooldown_s: float = 30.0
    ):
        self.primary = primary
        self.targets = targets
        self.name = primary.name
        self.breakers = {id(t): CircuitBreaker(failures, cooldown_s) for t in targets}

    @property
    def tokenizer(self):
        return getattr(self.primary, "tokenizer", None)

    async def prepare(self, ctx: CallContext) -> Prepared:
        return await self.primary.prepare(ctx)

    async def start(self, ctx: CallContext) -> BackendStream:
        try:
            stream = await self.primary.start(ctx)
            ctx.served_by = self.primary.name
            return stream
        except Exception as exc:
            if not is_retryable(exc):
                raise
            last = exc
        for target in self.targets:
            breaker = self.breakers[id(target)]
            if not breaker.available():
                continue
            try:
                stream = await target.start(ctx)
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                breaker.record(False)
                logger.warning("fallback %s failed: %s", target.name, exc)
                last = exc
                continue
            breaker.record(True)
            ctx.served_by = target.name
            ctx.decisions["fallback"] = target.name
            return stream
        raise last


class ModelTarget:
    """Another served model as a fallback target: the call is prepared again with that
    model's tokenizer and defaults."""

    def __init__(self, router, model: str):
        self.router = router
        self.name = model

    async def start(self, ctx: CallContext) -> BackendStream:
        backend = self.router.backend_for(self.name)
        prepared = await backend.prepare(ctx)
        return await backend.start(ctx, prepared)
