"""The feedback policy: remembers what produced each answer, for later ratings."""

from __future__ import annotations

from tokenmill.gateway.policy import CallContext, Policy
from tokenmill.observability.feedback import CallRecord, FeedbackStore


class FeedbackPolicy(Policy):
    """Hands each answered call's context to the store's memory (no I/O)."""

    name = "feedback"
    spanned = False

    def __init__(self, store: FeedbackStore):
        self.store = store

    async def post_call(self, ctx: CallContext) -> None:
        if ctx.result is None or ctx.error is not None or ctx.route is None:
            return
        self.store.remember(
            CallRecord(
                completion_id=ctx.call.request_id,
                model=ctx.model,
                model_version=ctx.route.version,
                caller=ctx.call.caller.name,
                served_by=ctx.served_by,
                decisions=dict(ctx.decisions),
            )
        )
