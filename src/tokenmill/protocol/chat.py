"""POST /v1/chat/completions: request, response and stream chunk."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tokenmill.errors import InvalidRequestError
from tokenmill.protocol.common import (
    DropNoneModel,
    OpenAIModel,
    ResponseFormat,
    ResponseModel,
    SamplingFields,
    UsageInfo,
    StructuredOutputs,
    structured_spec,
)
from tokenmill.sampling_params import SamplingDefaults, SamplingParams


class ContentPart(OpenAIModel):
    """One part of a message's content; only {"type": "text", "text": ...} is served."""

    # The schema states the contract; the check itself is in serving, with a clear message.
    type: str = Field(json_schema_extra={"enum": ["text"]})
    text: str | None = None


class ChatMessage(OpenAIModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class ChatCompletionRequest(SamplingFields):
    """OpenAI's chat completion request plus vLLM's sampling extensions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(
        None, ge=0, description="Deprecated by OpenAI in favour of max_completion_tokens."
    )
    max_completion_tokens: int | None = Field(
        None, ge=0, description="New tokens at most; omitted means up to the context length."
    )
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputs | None = None
    tools: list[dict[str, Any]] | None = Field(
        None,
        description="Not supported yet: must be absent or empty.",
        json_schema_extra={"maxItems": 0},
    )
    add_generation_prompt: bool = True

    def to_sampling_params(self, defaults: SamplingDefaults) -> SamplingParams:
        """The engine's view of this request, unset sampling fields taken from
        `defaults`; raises InvalidRequestError on conflicts."""
        structured = structured_spec(self.response_format, self.structured_outputs)
        if self.tools:
            raise InvalidRequestError(
                "Tool calling is not supported yet; send the request without `tools`.",
                param="tools",
            )
        if self.top_logprobs is not None and not self.logprobs:
            raise InvalidRequestError(
                "top_logprobs requires logprobs to be true.", param="top_logprobs"
            )
        max_tokens = (
            self.max_completion_tokens
            if self.max_completion_tokens is not None
            else self.max_tokens
        )
        return defaults.params(
            max_tokens=max_tokens,
            logprobs=(self.top_logprobs or 0) if self.logprobs else None,
            structured=structured,
            **self.sampling_kwargs(),
        )


class ChatLogprob(ResponseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatLogprobContent(ChatLogprob):
    top_logprobs: list[ChatLogprob] = Field(default_factory=list)


class ChatChoiceLogprobs(ResponseModel):
    content: list[ChatLogprobContent] | None = None


class ChatResponseMessage(ResponseModel):
    role: str = "assistant"
    content: str | None = None


class ChatCompletionChoice(ResponseModel):
    index: int
    message: ChatResponseMessage
    logprobs: ChatChoiceLogprobs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    """The stop string or token id that ended the choice (vLLM's extension)."""


class ChatCompletionResponse(ResponseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: UsageInfo


class DeltaMessage(DropNoneModel):
    role: str | None = None
    content: str | None = None


class ChatStreamChoice(ResponseModel):
    index: int
    delta: DeltaMessage
    logprobs: ChatChoiceLogprobs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


class ChatCompletionChunk(ResponseModel):
    """One server-sent event of a streamed chat completion."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatStreamChoice]
    usage: UsageInfo | None = None
