"""Tool calling's pure parts: modes, grammars, parsing, the fallback prompt, streaming."""

from __future__ import annotations

import json

import pytest

from tokenmill.errors import InvalidRequestError
from tokenmill.gateway.formats.chat import ToolCallStream, tool_call_deltas
from tokenmill.protocol.chat import ChatCompletionRequest, ChatMessage
from tokenmill.protocol.tools import Tool, history_messages, parse_tool_calls, tool_mode
from tokenmill.sampling_params import SamplingDefaults

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
ADD = {"type": "function", "function": {"name": "add"}}


def request(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER, ADD], **fields}
    )


def test_required_constrains_to_an_array_of_calls():
    params = request(tool_choice="required").to_sampling_params(SamplingDefaults())
    schema = json.loads(params.structured.value)
    assert params.structured.kind == "json_schema" and schema["minItems"] == 1
    names = [c["properties"]["name"]["const"] for c in schema["items"]["anyOf"]]
    assert names == ["get_weather", "add"] and "maxItems" not in schema


def test_named_function_and_no_parallel_allow_one_call_of_it():
    body = request(
        tool_choice={"type": "function", "function": {"name": "add"}}, parallel_tool_calls=False
    )
    schema = json.loads(body.to_sampling_params(SamplingDefaults()).structured.value)
    assert schema["items"]["properties"]["name"]["const"] == "add" and schema["maxItems"] == 1


def test_auto_uses_a_triggered_tag_and_none_is_free_text():
    spec = request().to_sampling_params(SamplingDefaults()).structured
    tag = json.loads(spec.value)["format"]
    assert spec.kind == "tag" and tag["triggers"] == ["<tool_call>"]
    assert next(t["begin"] for t in tag["tags"]).startswith('<tool_call>{"name": "get_weather"')
    assert request(tool_choice="none").to_sampling_params(SamplingDefaults()).structured is None


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "function.name"),
        ({"tool_choice": "required", "response_format": {"type": "json_object"}}, "tool_choice"),
    ],
)
def test_bad_tool_requests_are_refused(fields, param):
    with pytest.raises(InvalidRequestError) as err:
        request(**fields).to_sampling_params(SamplingDefaults())
    assert param in err.value.param


def test_duplicate_names_are_refused():
    with pytest.raises(InvalidRequestError):
        tool_mode([Tool.model_validate(WEATHER)] * 2, None, None)


def test_parse_required_and_auto():
    mode = request(tool_choice="required").tool_mode()
    content, calls = parse_tool_calls('[{"name": "add", "arguments": {"a": 1}}]', mode)
    assert content is None and calls[0].function.name == "add"
    assert json.loads(calls[0].function.arguments) == {"a": 1}
    auto = request().tool_mode()
    text = 'Let me look. <tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}'
    text += '</tool_call><tool_call>{"name": "add", "arguments": {}}</tool_call>'
    content, calls = parse_tool_calls(text, auto)
    assert content == "Let me look." and [c.function.name for c in calls] == ["get_weather", "add"]
    assert len({c.id for c in calls}) == 2
    # Cut short inside a call: no call, the text kept whole.
    cut = 'Hi <tool_call>{"name": "add", "argu'
    assert parse_tool_calls(cut, auto) == (cut, [])


def test_history_renders_calls_and_results_as_text():
    messages = [
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content="Weather?"),
        ChatMessage.model_validate(
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            }
        ),
        ChatMessage(role="tool", content="5 C", tool_call_id="c1"),
    ]
    out = history_messages(messages, request().tool_mode())
    assert out[0].role == "system" and out[0].content.startswith("Be brief.")
    assert "get_weather" in out[0].content and "<tool_call>" in out[0].content
    assert (
        out[2].content
        == '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    )
    assert out[3].role == "user" and out[3].content == "<tool_response>\n5 C\n</tool_response>"
    plain = messages[:2]
    assert history_messages(plain, None) is plain


def test_stream_holds_back_a_possible_trigger_and_sends_calls_at_the_end():
    stream = ToolCallStream(request().tool_mode())
    assert stream.feed("Sure <tool") == "Sure "
    assert stream.feed('_call>{"name": "add", "arguments": {}}') == ""
    assert stream.feed("</tool_call>") == ""
    rest, calls = stream.finish()
    assert rest == "" and [c.function.name for c in calls] == ["add"]
    deltas = tool_call_deltas(calls)
    head, args = deltas[0].model_dump(), deltas[1].model_dump()
    assert head["tool_calls"][0]["function"] == {"name": "add", "arguments": ""}
    assert args["tool_calls"][0] == {"index": 0, "function": {"arguments": "{}"}}
    plain = ToolCallStream(request().tool_mode())
    assert plain.feed("a <") == "a " and plain.finish() == ("<", [])
