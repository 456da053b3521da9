"""What callers submit (GenerationRequest) and what the scheduler runs (Request: one
sequence, a prompt and the tokens generated after it)."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

import torch

from tokenmill.engine.grammar import TokenConstraint
from tokenmill.engine.ngram_proposer import SpeculationState
from tokenmill.sampling_params import SamplingParams


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED_STOPPED = "stop"
    FINISHED_LENGTH = "length"
    FINISHED_ABORTED = "abort"

    @property
    def finished(self) -> bool:
        return self in (
            RequestStatus.FINISHED_STOPPED,
            RequestStatus.FINISHED_LENGTH,
            RequestStatus.FINISHED_ABORTED,
        )


@dataclass
class GenerationRequest:
    """One prompt and how to complete it: the one type every caller hands the engine
    (the offline LLM, the CLI, the async engine and, through it, the gateway).

    Give `prompt_token_ids`, or `prompt` text for the engine to tokenize (with special
    tokens). Validation happens at admission, in the engine's InputProcessor.
    """

    request_id: str
    params: SamplingParams
    prompt_token_ids: list[int] | None = None
    prompt: str | None = None
    """The prompt's text when the caller has it (echo, logs); tokenized if ids are absent."""
    priority: int = 0
    """Lower is served first; ties go to the earlier arrival."""
    prompt_param: str = "prompt"
    """The API field that held the prompt ("messages", "prompt", "input"): errors about
    the prompt name it."""
    caller: str = ""
    """Who sent it (an API key's name): the scheduler shares batch slots fairly between
    callers, then between requests."""


@dataclass(eq=False)
class Request:
    """A single sequence (compared by identity: ids may be reused after a request ends). A client request with `n` completions becomes `n` of these,
    sharing `parent_id` and told apart by `index`.

    The scheduler closes the gap between `num_computed_tokens` and `num_tokens`; the
    same rule covers a fresh prompt, a chunked prefill, a decode step and a recompute
    after preemption.
    """

    request_id: str
    parent_id: str
    index: int
    prompt_token_ids: list[int]
    params: SamplingParams
    max_tokens: int
    """New tokens allowed, already resolved against the context length."""
    priority: int = 0
    """Lower is served first; ties go to the fairer share, then the earlier arrival."""
    arrival_seq: int = 0
    caller: str = ""
    """Who sent it; batch slots are shared fairly between callers (see Scheduler)."""
    output_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0
    """Prompt tokens found in the prefix cache on first admission."""
    status: RequestStatus = RequestStatus.WAITING
    generator: torch.Generator | None = None
    num_preemptions: int = 0
    wants_prompt_logprobs: bool = False
    """True for the one sequence of a parent that reports prompt logprobs."""
    constraint: TokenConstraint | None = None
    """The grammar state of a structured-output sequence; advanced with each token."""
    spec: SpeculationState | None = None
    """Set when the sequence may speculate; its drafts extend `num_tokens` for one step."""
    arrival_time: float = field(default_factory=time.monotonic)
    first_scheduled_time: float | None = None
    """When the scheduler first admitted it (time.monotonic): queue time for metrics."""

    @property
    def queue_time_s(self) -> float | None:
        if self.first_scheduled_time is None:
            return None
        return self.first_scheduled_time - self.arrival_time

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def draft_token_ids(self) -> list[int]:
        """This step's speculative drafts (not yet part of the sequence)."""
        return self.spec.draft_token_ids if self.spec is not None else []

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    def token_ids_slice(self, start: int, end: int) -> list[int]:
        """Token ids at positions [start, end) of prompt + output."""
        n_prompt = len(self.prompt_token_ids)
        if end <= n_prompt:
            return self.prompt_token_ids[start:end]
        if start >= n_prompt:
            return self.output_token_ids[start - n_prompt : end - n_prompt]
        return self.prompt_token_ids[start:] + self.output_token_ids[: end - n_prompt]

    def scheduled_token_ids(self, start: int, end: int) -> list[int]:
        """Token ids at positions [start, end) of prompt + output + this step's drafts."""
        n = self.num_tokens
        if end <= n:
            return self.token_ids_slice(start, end)
        return self.token_ids_slice(start, n) + self.draft_token_ids[max(0, start - n) : end - n]

    @property
    def is_finished(self) -> bool:
        return self.status.finished
