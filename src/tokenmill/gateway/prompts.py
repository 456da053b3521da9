"""Turning what clients send (messages, strings, token ids) into engine prompts."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import jinja2

from tokenmill import heap
from tokenmill.errors import InvalidRequestError
from tokenmill.gateway.engine_client import TokenizerClient
from tokenmill.protocol.chat import ChatMessage
from tokenmill.protocol.tools import ToolCallIn

T = TypeVar("T")


@dataclass
class EnginePrompt:
    """A prompt ready for the engine: token ids, and the text when the client sent text."""

    token_ids: list[int]
    text: str | None = None


INLINE_CHARS = 16_384
"""Text up to this size is tokenized on the event loop (measured: ~15 ms for 24k chars
on a loaded 2-core box, so ~10 ms at this size); larger text goes to a worker thread so
that other requests' streams keep flowing while it is encoded."""

TOKENIZE_THREADS = 2
"""Large texts are tokenized by at most this many threads at once; more wait their turn,
so a burst of huge prompts cannot take every core (or a thread's memory arena each)."""

TRIM_AFTER_CHARS = 1 << 20
"""After tokenizing a text this large, free memory is handed back to the system."""

CheckText = Callable[[str, str], None]
"""`check(text, param)`: raises a 400 naming `param` if the text cannot be a prompt."""


@functools.cache
def _tokenize_pool() -> ThreadPoolExecutor:
    """The threads that tokenize large texts; created on first use, shared by every loop."""
    return ThreadPoolExecutor(TOKENIZE_THREADS, thread_name_prefix="tokenmill-tokenize")


async def off_loop_if_large(size: int, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)`, inline when `size` (characters) is small, else on the tokenizing
    threads (at most TOKENIZE_THREADS at once)."""
    if size <= INLINE_CHARS:
        return fn(*args)
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(_tokenize_pool(), functools.partial(fn, *args))
    finally:
        if size >= TRIM_AFTER_CHARS:
            heap.trim()


def messages_to_dicts(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Plain dicts for the chat template; content parts become one string.

    Only text parts are served: an image or audio part is refused rather than dropped,
    since answering without it would mislead. `developer` is OpenAI's new name for
    `system`, which is what templates know.
    """
    out = []
    for i, message in enumerate(messages):
        content = message.content
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                if part.type != "text":
                    raise InvalidRequestError(
                        f"Content part type {part.type!r} is not supported; this server "
                        "serves a text-only model, so send only {'type': 'text'} parts.",
                        param=f"messages[{i}].content[{j}].type",
                    )
                if part.text is None:
                    raise InvalidRequestError(
                        "A text content part needs a `text` field.",
                        param=f"messages[{i}].content[{j}].text",
                    )
                texts.append(part.text)
            content = "\n".join(texts)
        role = "system" if message.role == "developer" else message.role
        entry: dict[str, Any] = {"role": role, "content": content or ""}
        if message.name is not None:
            entry["name"] = message.name
        if message.tool_calls:
            entry["tool_calls"] = [_call_dict(c) for c in message.tool_calls]
        if message.tool_call_id is not None:
            entry["tool_call_id"] = message.tool_call_id
        out.append(entry)
    return out


def _call_dict(call: ToolCallIn) -> dict[str, Any]:
    """An earlier call as chat templates expect it: HF's convention gives `arguments` as
    an object (templates write it with `tojson`); text that is not JSON stays text."""
    try:
        arguments: Any = json.loads(call.function.arguments)
    except json.JSONDecodeError:
        arguments = call.function.arguments
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.function.name, "arguments": arguments},
    }


async def chat_prompt(
    tokenizer: TokenizerClient,
    messages: list[ChatMessage],
    add_generation_prompt: bool = True,
    check: CheckText | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> EnginePrompt:
    """Renders the model's chat template (with `tools` where the template takes them),
    then tokenizes without adding special tokens (the template already wrote them).
    `check` sees the messages' text, then the rendered prompt, before anything is
    tokenized."""
    size = sum(len(str(m.content or "")) for m in messages)
    if check is not None and size > INLINE_CHARS:
        # The template only adds text: content alone over the bound is over it.
        check("".join(str(m.content or "") for m in messages), "messages")
    return await off_loop_if_large(
        size, _chat_prompt, tokenizer, messages, add_generation_prompt, check, tools
    )


def _chat_prompt(
    tokenizer: TokenizerClient,
    messages: list[ChatMessage],
    add_generation_prompt: bool,
    check: CheckText | None,
    tools: list[dict[str, Any]] | None,
) -> EnginePrompt:
    text = render_chat(tokenizer, messages, add_generation_prompt, tools)
    if check is not None:
        check(text, "messages")
    return EnginePrompt(tokenizer.encode(text, add_special_tokens=False), text=text)


def render_chat(
    tokenizer: TokenizerClient,
    messages: list[ChatMessage],
    add_generation_prompt: bool = True,
    tools: list[dict[str, Any]] | None = None,
) -> str:
    """The chat template applied to `messages`, with `tools` passed to it when given (only
    templates that render tools get them); template errors become a 400."""
    dicts = messages_to_dicts(messages)
    extra = {} if tools is None else {"tools": tools}
    try:
        return tokenizer.apply_chat_template(
            dicts, add_generation_prompt=add_generation_prompt, **extra
        )
    except (jinja2.TemplateError, ValueError, TypeError, KeyError) as exc:
        raise InvalidRequestError(
            f"The model's chat template rejected these messages: {exc}", param="messages"
        ) from exc


def completion_items(prompt: str | list[str] | list[int] | list[list[int]]) -> list[Any]:
    """The prompts of a completions request: a string, a token id list, or a list of
    either."""
    if isinstance(prompt, str):
        return [prompt]
    if prompt and all(isinstance(p, int) for p in prompt):
        return [prompt]
    return list(prompt)


async def completion_prompts(
    tokenizer: TokenizerClient,
    prompt: str | list[str] | list[int] | list[list[int]],
    check: CheckText | None = None,
) -> list[EnginePrompt]:
    """One engine prompt per prompt in the request, tokenized with special tokens.
    `check` sees each text before it is tokenized."""
    items = completion_items(prompt)
    if not items:
        raise InvalidRequestError("prompt must not be an empty list.", param="prompt")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            if check is not None:
                check(item, "prompt" if isinstance(prompt, str) else f"prompt[{i}]")
            ids = await off_loop_if_large(len(item), tokenizer.encode, item, True)
            out.append(EnginePrompt(ids, text=item))
        else:
            out.append(EnginePrompt(list(item)))  # the engine's admission checks the ids
    return out


def check_token_ids(token_ids: list[int], vocab_size: int, param: str) -> None:
    """Refuses ids outside the vocabulary instead of letting them reach the model."""
    for tok in token_ids:
        if not 0 <= tok < vocab_size:
            raise InvalidRequestError(
                f"Token id {tok} is outside the vocabulary [0, {vocab_size}).", param=param
            )
