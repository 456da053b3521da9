"""Tool calling: OpenAI's request fields, how calls are generated, and how they are read.

How a call is generated (see docs/tool_calling.md):
- `required` or a named function: the whole output is constrained to a JSON array of
  calls, `[{"name": ..., "arguments": {...}}]`, each call's arguments under its
  function's `parameters` schema (one call at most when `parallel_tool_calls` is false).
- `auto`: free text, until the model writes the trigger `<tool_call>`; from there the
  grammar forces `{"name": "<a tool>", "arguments": <valid arguments>}</tool_call>`
  (xgrammar's triggered structural tags). The text before the first call is the content.
- `none`: free text; the tools are still described to the model, as OpenAI does.

The prompt describes the tools in a system message written here (the fallback for chat
templates without tool syntax, which is what the packaged models have), and earlier
calls and tool results are rendered as text in the same `<tool_call>` /
`<tool_response>` spelling.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from tokenmill.errors import InvalidRequestError
from tokenmill.protocol.common import DropNoneModel, OpenAIModel, ResponseModel
from tokenmill.sampling_params import StructuredSpec

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"


class FunctionDefinition(OpenAIModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    """A JSON Schema of the arguments object; omitted means no arguments."""
    strict: bool | None = None


class Tool(OpenAIModel):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(OpenAIModel):
    name: str


class NamedToolChoice(OpenAIModel):
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class FunctionCall(ResponseModel):
    name: str
    arguments: str
    """The arguments object as JSON text (OpenAI's shape)."""


class ToolCall(ResponseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionCallIn(OpenAIModel):
    name: str
    arguments: str


class ToolCallIn(OpenAIModel):
    """An earlier call, in an assistant message of the history."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCallIn


class FunctionCallDelta(DropNoneModel):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(DropNoneModel):
    """One piece of a streamed call: id, type and name come first, arguments after."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta | None = None


@dataclass(frozen=True)
class ToolMode:
    """How one request uses its tools, resolved from tools + tool_choice."""

    tools: tuple[Tool, ...]
    choice: Literal["none", "auto", "required"]
    """"required" covers a named function too (then `tools` holds only that one)."""
    parallel: bool

    @property
    def calls_tools(self) -> bool:
        return self.choice != "none"


def tool_mode(
    tools: list[Tool] | None, tool_choice: ToolChoice | None, parallel: bool | None
) -> ToolMode | None:
    """The request's tool mode, None without tools. InvalidRequestError for a choice that
    names an unknown function or needs tools that were not sent."""
    if not tools:
        if tool_choice not in (None, "none"):
            raise InvalidRequestError(
                "tool_choice needs `tools`: send the functions the model may call.",
                param="tool_choice",
            )
        return None
    names = [t.function.name for t in tools]
    if len(set(names)) != len(names):
        raise InvalidRequestError("Tool function names must be unique.", param="tools")
    parallel = True if parallel is None else parallel
    if isinstance(tool_choice, NamedToolChoice):
        wanted = tool_choice.function.name
        chosen = [t for t in tools if t.function.name == wanted]
        if not chosen:
            raise InvalidRequestError(
                f"tool_choice names function {wanted!r}, which is not in `tools` "
                f"({', '.join(names)}).",
                param="tool_choice.function.name",
            )
        return ToolMode(tuple(chosen), "required", parallel)
    return ToolMode(tuple(tools), tool_choice or "auto", parallel)


def _parameters(tool: Tool) -> dict[str, Any]:
    return tool.function.parameters or {"type": "object", "properties": {}}


def _call_schema(tool: Tool) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": tool.function.name}, "arguments": _parameters(tool)},
        "required": ["name", "arguments"],
    }


def tool_spec(mode: ToolMode) -> StructuredSpec | None:
    """The grammar that generates this mode's calls (see the module docstring)."""
    if mode.choice == "none":
        return None
    if mode.choice == "required":
        calls = [_call_schema(t) for t in mode.tools]
        schema: dict[str, Any] = {
            "type": "array",
            "items": calls[0] if len(calls) == 1 else {"anyOf": calls},
            "minItems": 1,
        }
        if not mode.parallel:
            schema["maxItems"] = 1
        # Not sort_keys: the grammar writes properties in schema order, and "name" first
        # lets the model choose the function before its arguments.
        return StructuredSpec("json_schema", json.dumps(schema), param="tools")
    tags = [
        {
            "type": "tag",
            "begin": f'{CALL_OPEN}{{"name": "{t.function.name}", "arguments": ',
            "content": {"type": "json_schema", "json_schema": _parameters(t)},
            "end": f"}}{CALL_CLOSE}",
        }
        for t in mode.tools
    ]
    tag = {
        "type": "structural_tag",
        "format": {
            "type": "triggered_tags",
            "triggers": [CALL_OPEN],
            "tags": tags,
            "stop_after_first": not mode.parallel,
        },
    }
    return StructuredSpec("tag", json.dumps(tag), param="tools")


def tools_system_text(mode: ToolMode) -> str:
    """The fallback prompt that describes the tools and the call syntax."""
    listing = "\n".join(json.dumps(_described(t)) for t in mode.tools)
    return (
        "You can call these functions:\n"
        f"{listing}\n"
        "To call one, write "
        f'{CALL_OPEN}{{"name": <function name>, "arguments": <arguments object>}}{CALL_CLOSE}. '
        "Results come back as <tool_response>...</tool_response>."
    )


def new_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


def parse_tool_calls(text: str, mode: ToolMode) -> tuple[str | None, list[ToolCall]]:
    """(content, calls) of an output generated under `tool_spec(mode)`. Output cut
    short (max_tokens) leaves an incomplete call out and keeps the text as content."""
    if mode.choice == "required":
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            return text, []
        return None, [_call(item["name"], item["arguments"]) for item in items]
    content: list[str] = []
    calls: list[ToolCall] = []
    rest = text
    while True:
        before, opened, after = rest.partition(CALL_OPEN)
        content.append(before)
        if not opened:
            break
        body, closed, rest = after.partition(CALL_CLOSE)
        item = _json_or_none(body) if closed else None
        if not isinstance(item, dict) or "name" not in item or "arguments" not in item:
            content.append(opened + after)
            break
        calls.append(_call(item["name"], item["arguments"]))
    joined = "".join(content)
    if calls:
        return joined.strip() or None, calls
    return joined or None, calls


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def template_tools(mode: ToolMode | None) -> list[dict[str, Any]] | None:
    """The request's tools as a chat template that renders them takes them (OpenAI's
    function objects, with `parameters` filled in); None without tools."""
    if mode is None:
        return None
    return [{"type": "function", "function": _described(t)} for t in mode.tools]


def _described(tool: Tool) -> dict[str, Any]:
    return {
        "name": tool.function.name,
        "description": tool.function.description or "",
        "parameters": _parameters(tool),
    }


def history_messages(messages: list[Any], mode: ToolMode | None) -> list[Any]:
    """`messages` (ChatMessage) as the fallback prompt spells tools: the tool listing
    joined to the system message (or a new one first), earlier calls written into the
    assistant's text, tool results as user turns in <tool_response> tags. Returns new
    messages; mutates nothing. Without tools and tool turns, returns `messages`."""
    has_tool_turns = any(m.role == "tool" or m.tool_calls for m in messages)
    if mode is None and not has_tool_turns:
        return messages
    out = []
    for m in messages:
        if m.role == "tool":
            text = _text_of(m.content)
            out.append(m.model_copy(update={"role": "user", "content": _response(text)}))
        elif m.role == "assistant" and m.tool_calls:
            written = "".join(
                f'{CALL_OPEN}{{"name": {json.dumps(c.function.name)}, '
                f'"arguments": {c.function.arguments}}}{CALL_CLOSE}'
                for c in m.tool_calls
            )
            text = _text_of(m.content)
            out.append(m.model_copy(update={"content": text + written, "tool_calls": None}))
        else:
            out.append(m)
    if mode is not None:
        listing = tools_system_text(mode)
        first = out[0] if out else None
        if first is not None and first.role in ("system", "developer"):
            joined = f"{_text_of(first.content)}\n\n{listing}".strip()
            out[0] = first.model_copy(update={"content": joined})
        else:
            out.insert(0, type(messages[0])(role="system", content=listing))
    return out


def _response(text: str) -> str:
    return f"<tool_response>\n{text}\n</tool_response>"


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(part.text or "" for part in content)


def _call(name: str, arguments: Any) -> ToolCall:
    return ToolCall(
        id=new_call_id(), function=FunctionCall(name=name, arguments=json.dumps(arguments))
    )
