"""The policy protocol (LiteLLM's hook shape) and the per-call context policies share.

A policy is one module implementing any of three hooks:
- `pre_call(ctx)`: before the model runs. May refuse (raise a TokenmillError), rewrite
  `ctx.body` (redaction), record a decision, add response headers, or answer the call
  itself by setting `ctx.result` (a cache hit): then no model runs.
- `wrap_stream(ctx, deltas)`: wraps the stream of ChoiceDeltas (output redaction).
- `post_call(ctx)`: after the call ended, however it ended (`ctx.result` on success,
  `ctx.error` otherwise): usage correction, cache store, audit, metrics.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from tokenmill.gateway.call import Body, Call, CallResult, ChoiceDelta
from tokenmill.gateway.prompts import EnginePrompt
from tokenmill.sampling_params import SamplingParams

if TYPE_CHECKING:
    from tokenmill.gateway.router import Route


@dataclass
class Prepared:
    """A call made ready for the engine: its prompts tokenized, its sampling resolved
    against the model's defaults."""

    prompts: list[EnginePrompt]
    params: SamplingParams

    @property
    def num_prompt_tokens(self) -> int:
        return sum(len(p.token_ids) for p in self.prompts)

    @property
    def max_new_tokens(self) -> int:
        """Tokens the call may generate at most (the reservation a rate limit takes)."""
        per_choice = self.params.max_tokens or 0
        return per_choice * self.params.n * len(self.prompts)


class Preparer(Protocol):
    async def prepare(self, ctx: CallContext) -> Prepared: ...


@dataclass
class CallContext:
    """One call's state on its way through the pipeline. Policies read and write it;
    the pipeline owns it."""

    call: Call
    body: Body
    """The working copy of the request body: input policies may replace it."""
    route: Route
    headers: dict[str, str] = field(default_factory=dict)
    """Response headers policies add (rate limits, cache, served-by, version)."""
    decisions: dict[str, str] = field(default_factory=dict)
    """Policy name -> what it decided ("hit", "redacted", "flagged"), for audit/metrics."""
    result: CallResult | None = None
    error: BaseException | None = None
    served_by: str | None = None
    started: float = field(default_factory=time.monotonic)
    first_output_at: float | None = None
    _prepared: Prepared | None = None

    async def prepared(self) -> Prepared:
        """The call's prompts and sampling params, computed once (on first use, after
        the input policies that ran before it); the route's backend does the work."""
        if self._prepared is None:
            self._prepared = await self.route.backend.prepare(self)
        return self._prepared

    def invalidate_prepared(self) -> None:
        """Called by a policy that changed `body` after something prepared it."""
        self._prepared = None

    @property
    def model(self) -> str:
        return self.route.model

    @property
    def latency_s(self) -> float:
        return time.monotonic() - self.started


class Policy:
    """Base class: every hook does nothing. Subclasses override what they need."""

    name = "policy"
    spanned = True
    """Whether the pipeline traces this policy's pre_call in a span of its own."""

    async def pre_call(self, ctx: CallContext) -> None:
        """Runs before the model; see the module docstring for what it may do."""

    def wrap_stream(
        self, ctx: CallContext, deltas: AsyncIterator[ChoiceDelta]
    ) -> AsyncIterator[ChoiceDelta]:
        """Returns the stream clients will see; the default passes it through."""
        return deltas

    async def post_call(self, ctx: CallContext) -> None:
        """Runs once the call ended; must not raise (the pipeline logs and ignores it)."""
