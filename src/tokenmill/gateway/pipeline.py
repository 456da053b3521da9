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
from tokenmill.protocol.common import check_unicode

logger = logging.getLogger(__name__)
SERVED_BY_HEADER = "x-tokenmill-served-by"
VERSION_HEADER = "x-tokenmill-model-version"

# The loop holds tasks weakly; a finishing task may outlive the call that started it.
_finishing: set[asyncio.Task] = set()


class Pipeline:
    """Runs calls through its policies, in order, to the model the router picks."""

    def __init__(self, router: Router, policies: Sequence[Policy] = (), tracer=None):
        """`tracer` (OpenTelemetry's, or None when tracing is off) spans each policy's
        pre_call."""
        self.router = router
        self.policies = list(policies)
        self.tracer = tracer

    async def start(self, call: Call) -> CallHandle:
        """Routes `call`, runs every pre_call hook and starts the model. Raises a
        TokenmillError (bad input, refused, overloaded) before anything is streamed;
        the post_call hooks have then already run with the error."""
        ctx = CallContext(call, call.body, route=None)  # type: ignore[arg-type]
        try:
            check_unicode(call.body)
            ctx.route = self.router.route(call)
            ctx.headers[VERSION_HEADER] = ctx.route.version
            for policy in self.policies:
                if self.tracer is None or not _spanned(policy):
                    await policy.pre_call(ctx)
                    continue
                with self.tracer.start_as_current_span(f"policy {policy.name}"):
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

    async def run_task(self, call: Call) -> CallContext:
        """Serves a task call (embed, classify, ner) through the same routing and
        policies: the route's backend `run(ctx)` returns its CallResult (usage in its
        prompts, the answer in `output`). Raises what `start` raises, or the backend's
        error; the post_call hooks have run either way."""
        ctx = CallContext(call, call.body, route=None)  # type: ignore[arg-type]
        try:
            ctx.route = self.router.route(call)
            ctx.headers[VERSION_HEADER] = ctx.route.version
            for policy in self.policies:
                await policy.pre_call(ctx)
            ctx.result = await ctx.route.backend.run(ctx)
        except BaseException as exc:
            ctx.error = exc
            raise
        finally:
            await self._post_call(ctx)
        return ctx

    async def run(self, call: Call) -> CallHandle:
        """`start` then run to the end: the handle's `result` is the whole answer."""
        handle = await self.start(call)
        await handle.collect()
        return handle

    async def _post_call(self, ctx: CallContext) -> None:
        _log_call(ctx)
        for policy in self.policies:
            try:
                await policy.post_call(ctx)
            except Exception:
                logger.exception("post_call of policy %s failed", policy.name)


def _spanned(policy: Policy) -> bool:
    return policy.spanned and type(policy).pre_call is not Policy.pre_call


def _log_call(ctx: CallContext) -> None:
    """One line per call, linking its completion id to the request id on the line;
    counts and timings only, never prompt or output text."""
    if not logger.isEnabledFor(logging.INFO):
        return
    call = ctx.call
    if ctx.error is not None:
        code = getattr(ctx.error, "code", None) or type(ctx.error).__name__
        logger.info(
            "%s %s failed after %.3f s: %s", call.kind, call.request_id, ctx.latency_s, code
        )
        return
    usage = ctx.result.usage if ctx.result is not None else None
    logger.info(
        "%s %s done in %.3f s: %d prompt + %d completion tokens%s",
        call.kind,
        call.request_id,
        ctx.latency_s,
        usage.prompt_tokens if usage else 0,
        usage.completion_tokens if usage else 0,
        f", served by {ctx.served_by}" if ctx.served_by else "",
    )


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
