"""Shadow traffic: a sample of a name's live calls is replayed on its shadow version.

The shadow's answers are never sent to anyone; they are compared with the live answer
(per choice: exact token match when the call was greedy, and the length ratio
shadow/live) and the running figures kept on the shadow deployment's ShadowStats,
which /v1/models and the per-version metrics hook export. A shadow call runs in the
background after the live call has finished, so it adds no latency to it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from tokenmill.gateway.call import GENERATION_KINDS, ResultAssembler
from tokenmill.gateway.policy import CallContext, Policy
from tokenmill.gateway.registry import Deployment, Registry

logger = logging.getLogger(__name__)


class ShadowPolicy(Policy):
    """After each finished live call, with probability `sample`, replays it on the
    name's shadow version and records the comparison."""

    name = "shadow"

    def __init__(
        self, registry: Registry, sample: float = 1.0, rng: Callable[[], float] = random.random
    ):
        self.registry = registry
        self.sample = sample
        self._rng = rng
        self._tasks: set[asyncio.Task] = set()

    async def post_call(self, ctx: CallContext) -> None:
        if ctx.call.kind not in GENERATION_KINDS or ctx.result is None or ctx.route is None:
            return
        live = ctx.route.deployment
        if not isinstance(live, Deployment) or live.spec.shadow:
            return
        shadow = self.registry.shadow_of(live.spec.name)
        if shadow is None or shadow.model is None or self._rng() >= self.sample:
            return
        task = asyncio.ensure_future(self._replay(ctx, shadow))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Waits for the shadow calls in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _replay(self, live_ctx: CallContext, shadow: Deployment) -> None:
        stats = shadow.shadow_stats
        route = self.registry.route_to(shadow)
        ctx = CallContext(live_ctx.call, live_ctx.body, route)
        try:
            live_params = (await live_ctx.prepared()).params
            greedy = live_params.temperature == 0
            stream = await route.backend.start(ctx)
            body = ctx.body
            assembler = ResultAssembler(stream.prompts, body.n, False, route.model)
            try:
                async for delta in stream.deltas():
                    assembler.add(delta)
            finally:
                stream.close()
            result = assembler.result()
        except Exception as exc:  # noqa: BLE001 - a failing shadow never hurts live traffic
            stats.failures += 1
            logger.warning("shadow call on %s failed: %s", shadow.key, exc)
            return
        finally:
            self.registry.release(route)
        for live_choices, shadow_choices in zip(live_ctx.result.choices, result.choices):
            for a, b in zip(live_choices, shadow_choices):
                stats.compared += 1
                stats.length_ratio_sum += len(b.token_ids) / max(1, len(a.token_ids))
                if greedy:
                    stats.greedy_compared += 1
                    stats.exact_matches += int(a.text == b.text)
