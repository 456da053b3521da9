"""Chat templates: the Jinja programs that turn a message list into prompt text."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tokenmill.errors import ConfigError, InvalidRequestError


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
        self.native_tools = speaks_hermes_tools(source)
        """True when the template renders `tools` and spells calls as <tool_call> tags."""

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


def read_chat_template(path: str) -> str:
    """The template source in file `path` (`--chat-template`), checked to compile.
    ConfigError names the file when it is missing or not a valid Jinja template."""
    try:
        source = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"Cannot read the chat template {path}: {exc.strerror}.", setting="chat_template"
        ) from exc
    try:
        ChatTemplate(source, {})
    except TemplateError as exc:
        raise ConfigError(
            f"The chat template {path} is not a valid Jinja template: {exc}",
            setting="chat_template",
        ) from exc
    return source


def speaks_hermes_tools(source: str) -> bool:
    """Whether a template takes a `tools` list and writes calls and results in the
    <tool_call> / <tool_response> spelling (Hermes, Qwen 2.5 and later, SmolLM3): the one
    tokenmill's tool grammar generates. Templates with another call syntax (Llama 3.1's
    bare JSON, Mistral's [TOOL_CALLS]) get the fallback prompt, so the prompt never
    teaches a syntax the grammar would then forbid."""
    return "tools" in source and "<tool_call>" in source and "<tool_response>" in source


# Gemma's turn format: BOS, then "<start_of_turn>{user|model}\n{text}<end_of_turn>\n" per
# message. There is no system turn: a system message's text and a blank line open the
# first user turn. Roles must alternate starting with the user; text is trimmed.
GEMMA_TEMPLATE = """\
{%- macro render(content) -%}
  {%- if content is string -%}
    {{- content | trim -}}
  {%- elif content is iterable -%}
    {%- for part in content -%}
      {%- if part['type'] == 'image' -%}
        {{- '<start_of_image>' -}}
      {%- elif part['type'] == 'text' -%}
        {{- part['text'] | trim -}}
      {%- endif -%}
    {%- endfor -%}
  {%- else -%}
    {{- raise_exception('Message content must be a string or a list of parts.') -}}
  {%- endif -%}
{%- endmacro -%}
{{- bos_token -}}
{%- set ns = namespace(prefix='', turns=messages) -%}
{%- if messages and messages[0]['role'] == 'system' -%}
  {%- set system = messages[0]['content'] -%}
  {%- set ns.prefix = (system if system is string else system[0]['text']) + '\\n\\n' -%}
  {%- set ns.turns = messages[1:] -%}
{%- endif -%}
{%- for message in ns.turns -%}
  {%- if (message['role'] == 'user') != (loop.index0 is even) -%}
    {{- raise_exception('Gemma needs turns to alternate user/assistant, starting with user.') -}}
  {%- endif -%}
  {%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}
  {{- '<start_of_turn>' + role + '\\n' + (ns.prefix if loop.first else '') -}}
  {{- render(message['content']) -}}
  {{- '<end_of_turn>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<start_of_turn>model\\n' -}}
{%- endif -%}
"""

FALLBACK_TEMPLATES = {"gemma3": GEMMA_TEMPLATE}
"""Templates by architecture, used only when a GGUF carries none: llama.cpp's converter
misses templates that newer HF repos keep in chat_template.jinja (the packaged Gemma 3
file has none)."""
