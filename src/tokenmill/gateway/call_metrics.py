"""The metrics policy: each finished call's tokens, latencies and gateway decisions.

It only reads the CallContext in `post_call`, once per call, so streaming pays
nothing per token. Response-cache hits count as cache lookups, not as model tokens:
no model produced them.
"""

from __future__ import annotations

from tokenmill.errors import TokenmillError
from tokenmill.gateway.policy import CallContext, Policy
from tokenmill.gateway.rate_limit import RateLimitError
from tokenmill.observability.metrics import CallObservation, Metrics

GUARDRAILS = ("injection", "pii", "pii_output")
"""Decision keys that guardrail policies write."""
CACHE_KIND_DECISION = "cache_kind"


class CallMetricsPolicy(Policy):
    """Feeds `Metrics` from each call's context; mutates only the metrics."""

    name = "metrics"

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    async def post_call(self, ctx: CallContext) -> None:
        if ctx.route is None:
            return
        model, m = ctx.model, self.metrics
        self._count_decisions(ctx)
        if ctx.error is not None:
            if isinstance(ctx.error, RateLimitError):
                m.rate_limited.labels(model, ctx.call.caller.name).inc()
            code = (
                ctx.error.code or type(ctx.error).__name__
                if isinstance(ctx.error, TokenmillError)
                else type(ctx.error).__name__
            )
            m.request_failure.labels(model, code).inc()
            return
        if ctx.result is None or ctx.decisions.get("cache") == "hit":
            return
        usage = ctx.result.usage
        end = ctx.started + ctx.latency_s
        ttft = itl = None
        if ctx.first_output_at is not None:
            ttft = ctx.first_output_at - ctx.started
            if usage.completion_tokens > 1:
                itl = (end - ctx.first_output_at) / (usage.completion_tokens - 1)
        m.observe_call(
            CallObservation(
                model_name=model,
                prompt_tokens=usage.prompt_tokens,
                generation_tokens=usage.completion_tokens,
                finish_reasons=[
                    c.finish_reason or "unknown" for cs in ctx.result.choices for c in cs
                ],
                e2e_s=end - ctx.started,
                ttft_s=ttft,
                itl_s=itl,
                queue_times_s=[
                    p.queue_time_s for p in ctx.result.prompts if p.queue_time_s is not None
                ],
            )
        )

    def _count_decisions(self, ctx: CallContext) -> None:
        model, decisions = ctx.model, ctx.decisions
        cache = decisions.get("cache")
        if cache is not None:
            kind = decisions.get(CACHE_KIND_DECISION, "exact")
            self.metrics.response_cache.labels(model, cache, kind).inc()
        for policy in GUARDRAILS:
            decision = decisions.get(policy)
            if decision is not None:
                action = decision.split(":", 1)[0]
                self.metrics.guardrail_decisions.labels(model, policy, action).inc()
