"""OpenAI's (legacy) text completion shapes from a call's result or its deltas.

Choice `index` is `prompt_index * n + completion_index`, as OpenAI numbers them. With
`echo` the prompt text (as the model saw it: after input guardrails) precedes each
choice, and with `logprobs` the prompt's tokens are scored too (lm-evaluation-harness).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from tokenmill.engine.outputs import PositionLogprobs
from tokenmill.gateway.call import CallResult, ChoiceDelta, PromptInfo, Usage
from tokenmill.gateway.engine_client import TokenizerClient
from tokenmill.gateway.formats.chat import usage_info
from tokenmill.gateway.formats.logprobs import append_completion_logprobs
from tokenmill.protocol.completion import (
    CompletionChoice,
    CompletionChunk,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
)


def echo_text(prompt: PromptInfo, tokenizer: TokenizerClient | None) -> str:
    if prompt.text is not None or tokenizer is None:
        return prompt.text or ""
    return tokenizer.decode(prompt.token_ids, skip_special_tokens=False)


def completion_response(
    request_id: str,
    body: CompletionRequest,
    result: CallResult,
    tokenizer: TokenizerClient | None,
    created: int | None = None,
) -> CompletionResponse:
    """The `text_completion` object of a finished call."""
    choices = []
    for p_index, (prompt, prompt_choices) in enumerate(zip(result.prompts, result.choices)):
        for choice in prompt_choices:
            text, logprobs = choice.text, None
            if body.logprobs is not None:
                logprobs = CompletionLogprobs()
                offset = 0
                if body.echo:
                    offset = _append(
                        tokenizer, logprobs, prompt.token_ids, prompt.prompt_logprobs, 0
                    )
                _append(tokenizer, logprobs, choice.token_ids, choice.logprobs, offset)
            if body.echo:
                text = echo_text(prompt, tokenizer) + text
            choices.append(
                CompletionChoice(
                    index=p_index * body.n + choice.index,
                    text=text,
                    logprobs=logprobs,
                    finish_reason=choice.finish_reason,
                    stop_reason=choice.stop_reason,
                )
            )
    return CompletionResponse(
        id=request_id,
        created=created or int(time.time()),
        model=result.model,
        choices=choices,
        usage=usage_info(result.usage),
    )


async def completion_chunks(
    request_id: str,
    body: CompletionRequest,
    model: str,
    prompts: list[PromptInfo],
    deltas: AsyncIterator[ChoiceDelta],
    tokenizer: TokenizerClient | None,
    final_usage: Callable[[], Usage],
) -> AsyncIterator[CompletionChunk]:
    """`text_completion` chunks, one per delta; a usage chunk last when asked for."""
    created = int(time.time())
    offsets: dict[int, int] = {}
    async for delta in deltas:
        index = delta.prompt_index * body.n + delta.index
        first = index not in offsets
        offset = offsets.get(index, 0)
        text = delta.text
        logprobs = CompletionLogprobs() if body.logprobs is not None else None
        if first and body.echo:
            prompt = prompts[delta.prompt_index]
            text = echo_text(prompt, tokenizer) + text
            if logprobs is not None:
                offset = _append(
                    tokenizer, logprobs, prompt.token_ids, prompt.prompt_logprobs, offset
                )
        if logprobs is not None:
            offset = _append(tokenizer, logprobs, delta.token_ids, delta.logprobs, offset)
        else:
            offset += len(text)
        offsets[index] = offset
        if not (text or delta.finish_reason or (logprobs and logprobs.tokens)):
            continue
        choice = CompletionChoice(
            index=index,
            text=text,
            logprobs=logprobs,
            finish_reason=delta.finish_reason,
            stop_reason=delta.stop_reason,
        )
        yield CompletionChunk(id=request_id, created=created, model=model, choices=[choice])
    if body.include_usage:
        yield CompletionChunk(
            id=request_id, created=created, model=model, choices=[], usage=usage_info(final_usage())
        )


def _append(
    tokenizer: TokenizerClient | None,
    out: CompletionLogprobs,
    token_ids: list[int],
    positions: list[PositionLogprobs | None] | None,
    offset: int,
) -> int:
    if positions is None:
        positions = [None] * len(token_ids)
    return append_completion_logprobs(out, tokenizer, token_ids, positions, offset)
