"""The request pipeline: body + caller -> policies -> backend -> deltas -> usage.

Transport-free: the HTTP services, the batch runner, the Kafka worker and Ray replicas
all call `Pipeline.start(call)` and read the handle it returns. Nothing here knows
about HTTP; the OpenAI shapes come from `gateway/formats/`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence

from tokenmill.gateway.call import Call, CallResult, ChoiceDelta, ResultAssembler
from tokenmill.gateway.policy import CallContext, Policy
from tokenmill.gateway.router import Router

logger = logging.getLogger(__name__)
SERVED_BY_HEADER = "x-tokenmill-served-by"

# The loop holds tasks weakly; a finishing task may outlive the call that started it.
_finishing: set[asyncio.Task] = set()


class Pipeline:
    """Runs calls through its policies, in order, to the model the router picks."""

    def __init__(self, router: Router, policies: Sequence[Policy] = ()):
        self.router = router
        self.policies = list(policies)

    async def start(self, call: Call) -> CallHandle:
        """Routes `call`, runs every pre_call hook and starts the model. Raises a
        TokenmillError (bad input, refused, overloaded) before anything is streamed;
        the post_call hooks have then already run with the error."""
        ctx = CallContext(call, call.body, route=None)  # type: ignore[arg-type]
        try:
            ctx.route = self.router.route(call)
            for policy in self.policies:
                await policy.pre_call(ctx)
            if ctx.result is not None:
                stream = _Replay(ctx.result)
            else:
                stream = await ctx.route.backend.start(ctx)
                ctx.served_by = ctx.served_by or ctx.route.backend.name
            if ctx.served_by:
                ctx.headers[SERVED_BY_HEADER] = ctx.served_by
        except BaseException as exc:
            ctx.error = exc
            await self._post_call(ctx)
            raise
        return CallHandle(self, ctx, stream)

    async def run(self, call: Call) -> CallHandle:
        """`start` then run to the end: the handle's `result` is the whole answer."""
        handle = await self.start(call)
        await handle.collect()
        return handle

    async def _post_call(self, ctx: CallContext) -> None:
        for policy in self.policies:
            try:
                await policy.post_call(ctx)
            except Exception:
                logger.exception("post_call of policy %s failed", policy.name)


class CallHandle:
    """A started call. Read it once, by `deltas()` (streaming) or `collect()`; `close()`
    stops it early (client gone). The post_call hooks run exactly once, at the end."""

    def __init__(self, pipeline: Pipeline, ctx: CallContext, stream):
        self.ctx = ctx
        self.prompts = stream.prompts
        self._pipeline = pipeline
        self._stream = stream
        body = ctx.body
        wants_logprobs = (
            bool(body.logprobs) if ctx.call.kind == "chat" else (body.logprobs is not None)
        )
        self._assembler = ResultAssembler(stream.prompts, body.n, wants_logprobs, ctx.model)
        deltas = stream.deltas()
        for policy in pipeline.policies:
            deltas = policy.wrap_stream(ctx, deltas)
        self._deltas = deltas
        self._finished = False

    @property
    def headers(self) -> dict[str, str]:
        return self.ctx.headers

    @property
    def result(self) -> CallResult | None:
        """The whole answer, once the deltas have run out."""
        return self.ctx.result

    async def deltas(self) -> AsyncIterator[ChoiceDelta]:
        """Each choice's deltas as the model produces them; raises a TokenmillError if
        the call fails mid-way."""
        try:
            async for delta in self._deltas:
                if self.ctx.first_output_at is None:
                    self.ctx.first_output_at = time.monotonic()
                self._assembler.add(delta)
                yield delta
            self.ctx.result = self._assembler.result()
            self.ctx.result.reported_usage = getattr(self._stream, "usage", None)
        except BaseException as exc:
            self.ctx.error = exc
            raise
        finally:
            self._stream.close()
            await self._finish()

    async def collect(self) -> CallResult:
        async for _ in self.deltas():
            pass
        assert self.ctx.result is not None
        return self.ctx.result

    def close(self) -> None:
        """Stops an unfinished call (the client went away). Never blocks."""
        if self._finished:
            return
        if self.ctx.result is None and self.ctx.error is None:
            self.ctx.error = asyncio.CancelledError("the client went away")
        self._stream.close()
        task = asyncio.ensure_future(self._finish())
        _finishing.add(task)
        task.add_done_callback(_finishing.discard)

    async def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        await self._pipeline._post_call(self.ctx)


class _Replay:
    """A finished result (a cache hit) replayed as one delta per choice."""

    def __init__(self, result: CallResult):
        self.result = result
        self.prompts = result.prompts

    async def deltas(self) -> AsyncIterator[ChoiceDelta]:
        for p_index, choices in enumerate(self.result.choices):
            for c in choices:
                yield ChoiceDelta(
                    p_index,
                    c.index,
                    c.text,
                    list(c.token_ids),
                    list(c.logprobs) if c.logprobs is not None else None,
                    c.finish_reason,
                    c.stop_reason,
                )

    def close(self) -> None:
        pass
