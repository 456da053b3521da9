"""Per-key rate limits: requests per minute and tokens per minute.

A call takes one request from its key's rpm bucket, and reserves its prompt tokens plus
the most it may generate from the tpm bucket; at the end the reservation is corrected
to the tokens it really used (refunded in full if it failed). Over a limit: 429 with
Retry-After and `rate_limit_exceeded`. Every response to a limited key carries OpenAI's
x-ratelimit-* headers.
"""

from __future__ import annotations

import math

from tokenmill.errors import InvalidRequestError, TokenmillError
from tokenmill.gateway.buckets import BucketStore
from tokenmill.gateway.policy import CallContext, Policy


class RateLimitError(TokenmillError):
    """A key went over its rpm or tpm (HTTP 429)."""

    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"

    def __init__(self, message: str, retry_after_s: float, headers: dict[str, str]):
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.headers = headers


class RateLimitPolicy(Policy):
    """Enforces each caller's `rpm` and `tpm` (keys without them are not limited)."""

    name = "rate_limit"

    def __init__(self, buckets: BucketStore, default_max_tokens: int):
        self.buckets = buckets
        self.default_max_tokens = default_max_tokens
        self._reserved: dict[int, int] = {}

    async def pre_call(self, ctx: CallContext) -> None:
        caller = ctx.call.caller
        if caller.rpm is None and caller.tpm is None:
            return
        headers = ctx.headers
        if caller.rpm is not None:
            took = await self.buckets.take(f"{caller.name}:rpm", 1, caller.rpm)
            headers["x-ratelimit-limit-requests"] = str(caller.rpm)
            headers["x-ratelimit-remaining-requests"] = str(max(0, math.floor(took.remaining)))
            if not took.allowed:
                self._refuse(ctx, "requests", caller.rpm, took.retry_after_s)
        if caller.tpm is not None:
            need = await self._reservation(ctx)
            headers["x-ratelimit-limit-tokens"] = str(caller.tpm)
            if need > caller.tpm:
                await self._refund_request(ctx)
                raise InvalidRequestError(
                    f"This request needs up to {need} tokens (prompt plus max_tokens), more "
                    f"than the key {caller.name!r} may use in a minute ({caller.tpm}). Lower "
                    "max_tokens or shorten the prompt.",
                    param="max_tokens",
                    code="request_too_large",
                )
            took = await self.buckets.take(f"{caller.name}:tpm", need, caller.tpm)
            headers["x-ratelimit-remaining-tokens"] = str(max(0, math.floor(took.remaining)))
            if not took.allowed:
                await self._refund_request(ctx)
                self._refuse(ctx, "tokens", caller.tpm, took.retry_after_s)
            self._reserved[id(ctx)] = need

    async def post_call(self, ctx: CallContext) -> None:
        reserved = self._reserved.pop(id(ctx), None)
        caller = ctx.call.caller
        if reserved is None or caller.tpm is None:
            return
        used = ctx.result.usage.total_tokens if ctx.result is not None else 0
        await self.buckets.adjust(f"{caller.name}:tpm", reserved - used, caller.tpm)

    async def _reservation(self, ctx: CallContext) -> int:
        prepared = await ctx.prepared()
        per_choice = prepared.params.max_tokens
        if per_choice is None:
            per_choice = self.default_max_tokens
        return prepared.num_prompt_tokens + per_choice * prepared.params.n * len(prepared.prompts)

    async def _refund_request(self, ctx: CallContext) -> None:
        caller = ctx.call.caller
        if caller.rpm is not None:
            await self.buckets.adjust(f"{caller.name}:rpm", 1, caller.rpm)

    def _refuse(self, ctx: CallContext, what: str, limit: int, retry_after_s: float) -> None:
        ctx.decisions[self.name] = f"limited:{what}"
        raise RateLimitError(
            f"Rate limit reached for the key {ctx.call.caller.name!r}: {limit} {what} per "
            f"minute. Retry after {math.ceil(retry_after_s)} s.",
            retry_after_s,
            dict(ctx.headers),
        )
