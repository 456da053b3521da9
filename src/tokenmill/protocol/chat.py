"""POST /v1/chat/completions: request, response and stream chunk."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_serializer

from tokenmill.errors import InvalidRequestError
from tokenmill.protocol.common import (
    DropNoneModel,
    OpenAIModel,
    ResponseFormat,
    ResponseModel,
    SamplingFields,
    StructuredOutputs,
    UsageInfo,
    structured_spec,
)
from tokenmill.protocol.tools import (
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallIn,
    ToolChoice,
    ToolMode,
    tool_mode,
    tool_spec,
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
    tool_calls: list[ToolCallIn] | None = None
    """An assistant message's earlier calls."""
    tool_call_id: str | None = None
    """A tool message's answer to this call."""


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
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    """Omitted: "auto" with tools, "none" without."""
    parallel_tool_calls: bool | None = None
    """False: one call at most. Omitted: several allowed."""
    add_generation_prompt: bool = True

    def tool_mode(self) -> ToolMode | None:
        """How this request uses tools; None without them. Raises InvalidRequestError."""
        return tool_mode(self.tools, self.tool_choice, self.parallel_tool_calls)

    def to_sampling_params(self, defaults: SamplingDefaults) -> SamplingParams:
        """The engine's view of this request, unset sampling fields taken from
        `defaults`; raises InvalidRequestError on conflicts."""
        structured = structured_spec(self.response_format, self.structured_outputs)
        mode = self.tool_mode()
        if mode is not None and mode.calls_tools:
            if structured is not None:
                raise InvalidRequestError(
                    "Tool calls are generated under their own grammar: send tools with "
                    'tool_choice "none", or drop response_format / structured_outputs.',
                    param="tool_choice",
                )
            structured = tool_spec(mode)
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
            **self.beam_kwargs(self.sampling_kwargs()),
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
    tool_calls: list[ToolCall] | None = None

    @model_serializer(mode="wrap")
    def _omit_absent_calls(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if data.get("tool_calls") is None:
            data.pop("tool_calls", None)
        return data


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
    tool_calls: list[ToolCallDelta] | None = None


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
