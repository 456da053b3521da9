"""The named types that cross the gateway's seam.

A transport (HTTP, the batch runner, the Kafka worker, a Ray replica) turns what it
received into a `Call`: an OpenAI body plus the `Caller` it came from. The pipeline
answers with `ChoiceDelta`s as text is produced and a `CallResult` at the end; the
formats in `gateway/formats/` turn those into OpenAI's JSON and SSE shapes.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from tokenmill.engine.outputs import Logprob, PositionLogprobs
from tokenmill.protocol.chat import ChatCompletionRequest
from tokenmill.protocol.completion import CompletionRequest

CallKind = Literal["chat", "completion", "embed", "classify", "ner"]
GENERATION_KINDS = ("chat", "completion")
"""Calls that generate text; the others are task calls (`Pipeline.run_task`), which
generation-only policies (guardrails, response cache) let pass."""
Body = ChatCompletionRequest | CompletionRequest | Any


@dataclass(frozen=True)
class Caller:
    """Who is calling: a configured API key's name and rights, or anonymous."""

    name: str = "anonymous"
    """The key's name from the keys file ("admin" for --api-key keys); never the key."""
    admin: bool = False
    models: tuple[str, ...] | None = None
    """Served model names this key may use; None means all."""
    rpm: int | None = None
    """Requests per minute; None means unlimited."""
    tpm: int | None = None
    """Tokens (prompt + max_tokens) per minute; None means unlimited."""
    authenticated: bool = False

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models


@dataclass(frozen=True)
class Call:
    """One request to serve, whatever transport it came by."""

    kind: CallKind
    body: Body
    caller: Caller = field(default_factory=Caller)
    request_id: str = ""
    """Unique per call; the transport's (X-Request-Id, a batch line's custom_id) or new."""
    use_cache: bool = True
    """False when the client asked to bypass the response cache (Cache-Control: no-cache)."""
    priority: int | None = None
    """Overrides the body's priority (batch work runs at low priority)."""

    @classmethod
    def new(cls, kind: CallKind, body: Body, **kwargs: Any) -> Call:
        prefix = {"chat": "chatcmpl", "completion": "cmpl"}.get(kind, kind)
        kwargs.setdefault("request_id", f"{prefix}-{uuid.uuid4().hex}")
        return cls(kind, body, **kwargs)


@dataclass
class ChoiceDelta:
    """What one choice produced since its previous delta."""

    prompt_index: int
    index: int
    """The completion's index within its prompt (0..n-1)."""
    text: str
    token_ids: list[int]
    logprobs: list[PositionLogprobs] | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class PromptInfo:
    """One prompt as the model saw it (after templates and guardrails)."""

    token_ids: list[int]
    text: str | None = None
    prompt_logprobs: list[PositionLogprobs | None] | None = None
    num_cached_tokens: int = 0
    queue_time_s: float | None = None
    """Seconds the engine kept it waiting before its first step (None: no local engine)."""
    scheduled_at: float | None = None
    """When the engine first scheduled it (time.monotonic; None: no local engine)."""


@dataclass
class Choice:
    """One finished (or cut) choice, assembled from its deltas."""

    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[PositionLogprobs] | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class CallResult:
    """Everything a finished call produced: per prompt, what the model saw and its
    choices. Serialisable (`to_json` / `from_json`) for the response cache."""

    prompts: list[PromptInfo]
    choices: list[list[Choice]]
    """choices[prompt_index][index]."""
    model: str
    reported_usage: Usage | None = None
    """Usage as a remote backend counted it (its token ids stay remote)."""
    output: Any = None
    """A task call's answer (embeddings, label probabilities, entities); None for text."""

    @property
    def usage(self) -> Usage:
        if self.reported_usage is not None:
            return self.reported_usage
        usage = Usage()
        for prompt, choices in zip(self.prompts, self.choices):
            usage.prompt_tokens += len(prompt.token_ids)
            usage.cached_tokens += prompt.num_cached_tokens
            usage.completion_tokens += sum(len(c.token_ids) for c in choices)
        return usage

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CallResult:
        return cls(
            prompts=[
                PromptInfo(
                    p["token_ids"],
                    p["text"],
                    _positions(p["prompt_logprobs"]),
                    p["num_cached_tokens"],
                )
                for p in data["prompts"]
            ],
            choices=[
                [
                    Choice(
                        c["index"],
                        c["text"],
                        c["token_ids"],
                        _positions(c["logprobs"]),
                        c["finish_reason"],
                        c["stop_reason"],
                    )
                    for c in cs
                ]
                for cs in data["choices"]
            ],
            model=data["model"],
            reported_usage=Usage(**data["reported_usage"]) if data.get("reported_usage") else None,
        )


def _positions(raw: list | None) -> list | None:
    """JSON turned token-id keys into strings and Logprobs into dicts: undo both."""
    if raw is None:
        return None
    return [None if pos is None else {int(k): Logprob(**v) for k, v in pos.items()} for pos in raw]


class ResultAssembler:
    """Accumulates deltas into a CallResult; mutates only itself."""

    def __init__(self, prompts: list[PromptInfo], n: int, wants_logprobs: bool, model: str):
        self.prompts = prompts
        self.model = model
        self.choices = [
            [Choice(i, logprobs=[] if wants_logprobs else None) for i in range(n)] for _ in prompts
        ]
        self._parts: list[list[list[str]]] = [[[] for _ in range(n)] for _ in prompts]

    def add(self, delta: ChoiceDelta) -> None:
        choice = self.choices[delta.prompt_index][delta.index]
        self._parts[delta.prompt_index][delta.index].append(delta.text)
        choice.token_ids.extend(delta.token_ids)
        if choice.logprobs is not None and delta.logprobs:
            choice.logprobs.extend(delta.logprobs)
        if delta.finish_reason is not None:
            choice.finish_reason = delta.finish_reason
            choice.stop_reason = delta.stop_reason

    def result(self) -> CallResult:
        for prompt_parts, choices in zip(self._parts, self.choices):
            for parts, choice in zip(prompt_parts, choices):
                choice.text = "".join(parts)
        return CallResult(self.prompts, self.choices, self.model)
