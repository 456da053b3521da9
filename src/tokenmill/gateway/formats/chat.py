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
    for choice in result.choices[0]:
        logprobs = None
        if body.logprobs:
            positions = choice.logprobs or [None] * len(choice.token_ids)
            logprobs = ChatChoiceLogprobs(
                content=chat_logprobs(
                    tokenizer, choice.token_ids, positions, body.top_logprobs or 0
                )
            )
        choices.append(
            ChatCompletionChoice(
                index=choice.index,
                message=ChatResponseMessage(content=choice.text),
                logprobs=logprobs,
                finish_reason=choice.finish_reason,
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
    async for delta in deltas:
        if delta.index not in started:
            started.add(delta.index)
            first = DeltaMessage(role="assistant", content="")
            yield chunk([ChatStreamChoice(index=delta.index, delta=first)])
        logprobs = None
        if body.logprobs and delta.logprobs:
            logprobs = ChatChoiceLogprobs(
                content=chat_logprobs(
                    tokenizer, delta.token_ids, delta.logprobs, body.top_logprobs or 0
                )
            )
        if not (delta.text or delta.finish_reason or logprobs):
            continue
        yield chunk(
            [
                ChatStreamChoice(
                    index=delta.index,
                    delta=DeltaMessage(content=delta.text or None),
                    logprobs=logprobs,
                    finish_reason=delta.finish_reason,
                    stop_reason=delta.stop_reason,
                )
            ]
        )
    if body.include_usage:
        yield chunk([], usage=usage_info(final_usage()))
