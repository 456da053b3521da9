"""The tracing policy: a GenAI span per call, with queue wait, prefill and decode inside.

The call's span starts in `pre_call` (a child of whatever span is current: the HTTP
request's, or a batch job's) and ends in `post_call`. Its phases are known only as
timestamps (the engine's first scheduling, the first output, the end), so their spans
are made afterwards with those times. Attributes follow the OpenTelemetry GenAI
semantic conventions; no prompt or output text is recorded.
"""

from __future__ import annotations

import time

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from tokenmill.gateway.policy import CallContext, Policy
from tokenmill.observability.tracing import Tracing, clock_offset_ns, wall_ns

OPERATIONS = {"chat": "chat", "completion": "text_completion"}


class CallTracingPolicy(Policy):
    """Makes each call's spans; mutates only its own map of open spans."""

    name = "tracing"
    spanned = False  # its pre_call opens the call's span: no span around that

    def __init__(self, tracing: Tracing):
        self.tracer = tracing.tracer
        self._open: dict[int, tuple[Span, int]] = {}

    async def pre_call(self, ctx: CallContext) -> None:
        operation = OPERATIONS[ctx.call.kind]
        body = ctx.body
        offset = clock_offset_ns()
        span = self.tracer.start_span(
            f"{operation} {ctx.model}",
            kind=SpanKind.INTERNAL,
            start_time=wall_ns(ctx.started, offset),
            attributes=_drop_none(
                {
                    "gen_ai.operation.name": operation,
                    "gen_ai.system": "tokenmill",
                    "gen_ai.provider.name": "tokenmill",
                    "gen_ai.request.model": ctx.model,
                    "gen_ai.request.max_tokens": _max_tokens(body),
                    "gen_ai.request.temperature": body.temperature,
                    "gen_ai.request.top_p": body.top_p,
                    "gen_ai.request.seed": body.seed,
                    "gen_ai.request.choice.count": body.n,
                    "tokenmill.caller": ctx.call.caller.name,
                }
            ),
        )
        self._open[id(ctx)] = (span, offset)

    async def post_call(self, ctx: CallContext) -> None:
        opened = self._open.pop(id(ctx), None)
        if opened is None:
            return
        span, offset = opened
        end = time.monotonic()
        for name, value in ctx.decisions.items():
            span.set_attribute(f"tokenmill.decision.{name}", value)
        if ctx.error is not None:
            span.set_status(Status(StatusCode.ERROR, str(ctx.error)[:200]))
            span.set_attribute(
                "error.type", getattr(ctx.error, "code", None) or type(ctx.error).__name__
            )
        if ctx.result is not None:
            usage = ctx.result.usage
            span.set_attributes(
                {
                    "gen_ai.response.id": ctx.call.request_id,
                    "gen_ai.response.model": ctx.result.model,
                    "gen_ai.response.finish_reasons": [
                        c.finish_reason or "unknown" for cs in ctx.result.choices for c in cs
                    ],
                    "gen_ai.usage.input_tokens": usage.prompt_tokens,
                    "gen_ai.usage.output_tokens": usage.completion_tokens,
                }
            )
            self._phases(span, ctx, end, offset)
        span.end(end_time=wall_ns(end, offset))

    def _phases(self, span: Span, ctx: CallContext, end: float, offset: int) -> None:
        """Queue wait, prefill and decode spans of the first prompt, from its timestamps."""
        prompt = ctx.result.prompts[0] if ctx.result.prompts else None
        if prompt is None or prompt.scheduled_at is None or prompt.queue_time_s is None:
            return
        parent = trace.set_span_in_context(span)
        first = ctx.first_output_at or end
        phases = (
            ("queue", prompt.scheduled_at - prompt.queue_time_s, prompt.scheduled_at),
            ("prefill", prompt.scheduled_at, first),
            ("decode", first, end),
        )
        for name, start, stop in phases:
            child = self.tracer.start_span(name, context=parent, start_time=wall_ns(start, offset))
            if name == "prefill":
                child.set_attribute("tokenmill.cached_tokens", prompt.num_cached_tokens)
            child.end(end_time=wall_ns(max(start, stop), offset))


def _max_tokens(body) -> int | None:
    return getattr(body, "max_completion_tokens", None) or body.max_tokens


def _drop_none(attributes: dict) -> dict:
    return {k: v for k, v in attributes.items() if v is not None}
