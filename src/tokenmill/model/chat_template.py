"""Chat templates: the Jinja programs that turn a message list into prompt text."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tokenmill.errors import InvalidRequestError


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _tojson(x: Any, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    # Jinja's own tojson escapes HTML characters; HF's does not, and templates rely on it.
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class ChatTemplate:
    """A compiled template, rendered in a sandbox with the globals HF provides
    (`raise_exception`, `strftime_now`, a `tojson` that keeps non-ASCII)."""

    def __init__(self, source: str, special_tokens: dict[str, str | None]) -> None:
        """special_tokens: names such as "bos_token", "eos_token" -> their text, passed to
        every render as HF does."""
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        self.source = source
        self._template = env.from_string(source)
        self._special_tokens = special_tokens

    def render(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, **extra: Any
    ) -> str:
        """The prompt text for `messages` (dicts with "role" and "content"). A template
        that rejects the conversation raises InvalidRequestError carrying its message."""
        try:
            return self._template.render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                **self._special_tokens,
                **extra,
            )
        except TemplateError as exc:
            raise InvalidRequestError(
                f"The chat template rejected the messages: {exc}", param="messages"
            ) from exc
