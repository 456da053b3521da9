"""What the engine hands back: vLLM's RequestOutput shape."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Logprob:
    """One token's log-probability, its rank in the distribution (1 = most likely)
    and its decoded text."""

    logprob: float
    rank: int
    decoded_token: str


# For one position: token id -> Logprob, holding the chosen token plus the top-N.
PositionLogprobs = dict[int, Logprob]


@dataclass
class CompletionOutput:
    """One of the `n` completions of a request, as accumulated so far."""

    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[PositionLogprobs] | None = None
    cumulative_logprob: float | None = None
    finish_reason: str | None = None
    """None while running; "stop" (EOS, stop id or stop string), "length" or "abort"."""
    stop_reason: int | str | None = None
    """The stop string or stop token id that ended it, None for EOS or length."""

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    """What changed in a request since its previous output.

    Every output carries `deltas`: per completion, the text, token ids and logprobs new
    since the previous one. Only the final output (`finished=True`) carries `outputs`,
    the whole completions; intermediate ones leave it empty, so that streaming costs
    time linear in the output's length. `prompt_logprobs` (a shared reference, not a
    copy) is complete from the first output on.
    """

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = False
    prompt_logprobs: list[PositionLogprobs | None] | None = None
    num_cached_tokens: int = 0
    """Prompt tokens served from the prefix cache instead of computed."""
    deltas: list[Delta] = field(default_factory=list)
    """Per completion, what is new since the previous output of this request."""
    queue_time_s: float | None = None
    """Seconds the request waited before the scheduler first admitted it."""
    scheduled_at: float | None = None
    """When the scheduler first admitted it (time.monotonic), for trace spans."""


@dataclass
class Delta:
    """The increment of one completion since the previous yield (streaming)."""

    index: int
    text: str
    token_ids: list[int]
    logprobs: list[PositionLogprobs] | None
    finish_reason: str | None
    stop_reason: int | str | None = None
