"""OpenAI's chat completion shapes from a call's result or its deltas."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from tokenmill.gateway.call import CallResult, ChoiceDelta, Usage
from tokenmill.gateway.engine_client import TokenizerClient
from tokenmill.gateway.formats.logprobs import chat_logprobs
from tokenmill.protocol.chat import (
    ChatChoiceLogprobs,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatResponseMessage,
    ChatStreamChoice,
    DeltaMessage,
)
from tokenmill.protocol.common import PromptTokensDetails, UsageInfo
from tokenmill.protocol.tools import (
    CALL_OPEN,
    FunctionCallDelta,
    ToolCall,
    ToolCallDelta,
    ToolMode,
    parse_tool_calls,
)


def usage_info(usage: Usage) -> UsageInfo:
    """OpenAI's usage object."""
    return UsageInfo(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cached_tokens),
    )


def chat_response(
    request_id: str,
    body: ChatCompletionRequest,
    result: CallResult,
    tokenizer: TokenizerClient | None,
    created: int | None = None,
) -> ChatCompletionResponse:
    """The `chat.completion` object of a finished call."""
    choices = []
    mode = body.tool_mode()
    for choice in result.choices[0]:
        logprobs = None
        if body.logprobs:
            positions = choice.logprobs or [None] * len(choice.token_ids)
            logprobs = ChatChoiceLogprobs(
                content=chat_logprobs(
                    tokenizer, choice.token_ids, positions, body.top_logprobs or 0
                )
            )
        message = ChatResponseMessage(content=choice.text)
        finish_reason = choice.finish_reason
        if mode is not None and mode.calls_tools:
            content, calls = parse_tool_calls(choice.text, mode)
            if calls:
                message = ChatResponseMessage(content=content, tool_calls=calls)
                finish_reason = "tool_calls" if finish_reason == "stop" else finish_reason
        choices.append(
            ChatCompletionChoice(
                index=choice.index,
                message=message,
                logprobs=logprobs,
                finish_reason=finish_reason,
                stop_reason=choice.stop_reason,
            )
        )
    return ChatCompletionResponse(
        id=request_id,
        created=created or int(time.time()),
        model=result.model,
        choices=choices,
        usage=usage_info(result.usage),
    )


async def chat_chunks(
    request_id: str,
    body: ChatCompletionRequest,
    model: str,
    deltas: AsyncIterator[ChoiceDelta],
    tokenizer: TokenizerClient | None,
    final_usage: Callable[[], Usage],
) -> AsyncIterator[ChatCompletionChunk]:
    """`chat.completion.chunk` objects: a role chunk opening each choice, then one per
    delta with text, logprobs or a finish reason; a usage chunk last when asked for
    (`final_usage()` gives it once the deltas ran out)."""
    created = int(time.time())

    def chunk(choices: list[ChatStreamChoice], **extra) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=request_id, created=created, model=model, choices=choices, **extra
        )

    started: set[int] = set()
    mode = body.tool_mode()
    calling: dict[int, ToolCallStream] = {}
    async for delta in deltas:
        if delta.index not in started:
            started.add(delta.index)
            first = DeltaMessage(role="assistant", content="")
            yield chunk([ChatStreamChoice(index=delta.index, delta=first)])
            if mode is not None and mode.calls_tools:
                calling[delta.index] = ToolCallStream(mode)
        text, finish_reason = delta.text, delta.finish_reason
        stream = calling.get(delta.index)
        if stream is not None:
            text = stream.feed(text or "")
            if finish_reason is not None:
                rest, calls = stream.finish()
                text += rest
                for piece in tool_call_deltas(calls):
                    if text:  # content first, as OpenAI orders it
                        yield chunk(
                            [ChatStreamChoice(index=delta.index, delta=DeltaMessage(content=text))]
                        )
                        text = ""
                    yield chunk([ChatStreamChoice(index=delta.index, delta=piece)])
                if calls and finish_reason == "stop":
                    finish_reason = "tool_calls"
        logprobs = None
        if body.logprobs and delta.logprobs:
            logprobs = ChatChoiceLogprobs(
                content=chat_logprobs(
                    tokenizer, delta.token_ids, delta.logprobs, body.top_logprobs or 0
                )
            )
        if not (text or finish_reason or logprobs):
            continue
        yield chunk(
            [
                ChatStreamChoice(
                    index=delta.index,
                    delta=DeltaMessage(content=text or None),
                    logprobs=logprobs,
                    finish_reason=finish_reason,
                    stop_reason=delta.stop_reason,
                )
            ]
        )
    if body.include_usage:
        yield chunk([], usage=usage_info(final_usage()))


class ToolCallStream:
    """The text of one streamed choice that may hold tool calls. Content is passed on as
    it comes, except text that is, or may become, a call (`<tool_call>` onwards, or all
    of it when calls are required); calls are sent once complete, at the finish."""

    def __init__(self, mode: ToolMode):
        self.mode = mode
        self._text = ""
        self._sent = 0
        self._in_call = mode.choice == "required"

    def feed(self, text: str) -> str:
        """Adds `text`; returns the content that can be sent now. Mutates the buffer."""
        self._text += text
        if self._in_call:
            return ""
        found = self._text.find(CALL_OPEN, max(0, self._sent - len(CALL_OPEN)))
        if found >= 0:
            self._in_call = True
            safe = found
        else:
            safe = len(self._text) - _partial_suffix(self._text, CALL_OPEN)
        out = self._text[self._sent : safe] if safe > self._sent else ""
        self._sent = max(self._sent, safe)
        return out

    def finish(self) -> tuple[str, list[ToolCall]]:
        """(content not sent yet, the calls) at the end of the choice."""
        _, calls = parse_tool_calls(self._text, self.mode)
        if calls:
            return "", calls
        return self._text[self._sent :], []


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of `text` that is a proper beginning of `marker`."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


def tool_call_deltas(calls: list[ToolCall]) -> list[DeltaMessage]:
    """OpenAI's streamed shape of each call: id, type and name with empty arguments,
    then the arguments."""
    out = []
    for i, call in enumerate(calls):
        head = ToolCallDelta(
            index=i,
            id=call.id,
            type="function",
            function=FunctionCallDelta(name=call.function.name, arguments=""),
        )
        args = ToolCallDelta(index=i, function=FunctionCallDelta(arguments=call.function.arguments))
        out += [DeltaMessage(tool_calls=[head]), DeltaMessage(tool_calls=[args])]
    return out
