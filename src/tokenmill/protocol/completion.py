"""POST /v1/completions: request, response and stream chunk."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from tokenmill.errors import InvalidRequestError
from tokenmill.protocol.common import (
    ResponseFormat,
    ResponseModel,
    SamplingFields,
    StructuredOutputs,
    UsageInfo,
    structured_spec,
)
from tokenmill.sampling_params import SamplingDefaults, SamplingParams

_Text = Annotated[str, Field(min_length=1)]
_Ids = Annotated[list[int], Field(min_length=1)]
Prompt = (
    _Text
    | Annotated[list[_Text], Field(min_length=1)]
    | _Ids
    | Annotated[list[_Ids], Field(min_length=1)]
)
"""A prompt is never empty: an empty string, list or token list has nothing to continue."""


class CompletionRequest(SamplingFields):
    """OpenAI's (legacy) completion request plus vLLM's sampling extensions."""

    prompt: Prompt = Field(
        description="A string, a list of strings, token ids, or a list of token id lists."
    )
    max_tokens: int | None = Field(
        16, ge=0, description="New tokens at most (0 with echo scores the prompt only)."
    )
    echo: bool = False
    logprobs: int | None = Field(
        None, ge=0, le=20, description="Return this many top alternatives per token."
    )
    suffix: str | None = None
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputs | None = None

    def to_sampling_params(self, defaults: SamplingDefaults) -> SamplingParams:
        """The engine's view of this request, unset sampling fields taken from
        `defaults`; raises InvalidRequestError on conflicts."""
        structured = structured_spec(self.response_format, self.structured_outputs)
        if self.suffix:
            raise InvalidRequestError("suffix (insertion) is not supported.", param="suffix")
        prompt_logprobs = None
        if self.echo and self.logprobs is not None:
            prompt_logprobs = self.logprobs
        elif self.echo and self.max_tokens == 0:
            # Echo alone with nothing to generate: the engine runs the prompt only when
            # prompt logprobs are asked for, so ask for the cheapest kind.
            prompt_logprobs = 0
        return defaults.params(
            max_tokens=self.max_tokens,
            logprobs=self.logprobs,
            prompt_logprobs=prompt_logprobs,
            structured=structured,
            **self.beam_kwargs(self.sampling_kwargs()),
        )


class CompletionLogprobs(ResponseModel):
    """The legacy shape lm-evaluation-harness reads: parallel lists, one entry a token."""

    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(ResponseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


class CompletionResponse(ResponseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo


class CompletionChunk(ResponseModel):
    """One server-sent event of a streamed completion."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo | None = None
