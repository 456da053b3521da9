"""A model replica: one engine and the whole tokenmill app, inside a Ray Serve replica."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from tokenmill.config import AppConfig
from tokenmill.ray.forwarding import ForwardedRequest, ReplicaReply, ResponseHead, call_app

logger = logging.getLogger("tokenmill.ray")

LOAD_TIMEOUT_S = 900.0


class ModelReplica:
    """Builds the same FastAPI app `tokenmill serve` runs (engine, gateway pipeline,
    Redis-shared rate limits and cache with --redis-url) and answers forwarded requests
    through it. The constructor returns once the model is loaded and warm, so Serve
    marks the replica running only when it can serve."""

    async def __init__(self, config: AppConfig):
        from ray import serve

        from tokenmill.cli.serve import build_serve_app
        from tokenmill.gateway.assemble import redis_client
        from tokenmill.server.state import Phase

        context = serve.get_replica_context()
        self.replica = context.replica_id.unique_id if context is not None else "local"
        failures: list[BaseException] = []
        self.app, self.observability = build_serve_app(
            config, redis_client(config.gateway.redis_url), on_fatal=failures.append
        )
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()
        state = self.app.state.tokenmill
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while state.phase is Phase.LOADING:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the model did not load within {LOAD_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.1)
        if state.phase is not Phase.READY:
            cause = f": {failures[0]!r}" if failures else ""
            raise RuntimeError(f"the model failed to load ({state.phase.value}){cause}")
        logger.info("replica %s serving %s", self.replica, state.model_name)

    async def handle(self, request: ForwardedRequest) -> ReplicaReply:
        """The whole response to `request`."""
        head, chunks = None, []
        async for item in call_app(self.app, request, self.replica):
            if isinstance(item, ResponseHead):
                head = item
            else:
                chunks.append(item)
        if head is None:
            raise RuntimeError("the app sent no response")
        return ReplicaReply(head, b"".join(chunks))

    async def stream(self, request: ForwardedRequest) -> AsyncIterator[object]:
        """The ResponseHead, then each body chunk as the app produces it."""
        async for item in call_app(self.app, request, self.replica):
            yield item

    async def check_health(self) -> None:
        """Serve's health probe: raises (and Serve replaces this replica) when the
        engine failed or its thread died."""
        healthy, status = self.app.state.tokenmill.health()
        if not healthy:
            raise RuntimeError(f"tokenmill replica unhealthy: {status}")

    async def __del__(self) -> None:
        """Drains the engine on Serve's graceful shutdown of this replica."""
        lifespan = getattr(self, "_lifespan", None)
        if lifespan is not None:
            self._lifespan = None
            await lifespan.__aexit__(None, None, None)
