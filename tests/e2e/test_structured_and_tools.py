"""Structured output and tool calling through the official openai SDK, streaming too,
against a real `tokenmill serve` (the session's shared server)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import openai
import pytest

from tests.e2e.conftest import start_server

pytestmark = pytest.mark.slow

WEATHER_PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 20}, "unit": {"enum": ["c", "f"]}},
    "required": ["city", "unit"],
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": WEATHER_PARAMS,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "add",
            "parameters": {
                "type": "object",
                "properties": {
                    "a": {"type": "integer", "minimum": 0, "maximum": 1000},
                    "b": {"type": "integer", "minimum": 0, "maximum": 1000},
                },
                "required": ["a", "b"],
            },
        },
    },
]
PARAMS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def test_json_schema_response_format(server, model_name):
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 30},
            "population": {"type": "integer", "minimum": 1},
            "landmarks": {
                "type": "array",
                "items": {"type": "string", "maxLength": 30},
                "maxItems": 3,
            },
        },
        "required": ["city", "population", "landmarks"],
    }
    client = server.client(timeout=120)
    for seed in (1, 2):
        r = client.chat.completions.create(
            model=model_name,
            messages=[{"role": "user", "content": "Describe a city as JSON."}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "city", "schema": schema, "strict": True},
            },
            temperature=1.0,
            seed=seed,
            max_tokens=150,
        )
        assert r.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(r.choices[0].message.content), schema)


def test_structured_outputs_choice_on_completions_streamed(server, model_name):
    stream = server.client().completions.create(
        model=model_name,
        prompt="Is the sky blue? Answer:",
        max_tokens=10,
        stream=True,
        extra_body={"structured_outputs": {"choice": ["yes", "no", "maybe"]}},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text in ("yes", "no", "maybe") and chunks[-1].choices[0].finish_reason == "stop"


def test_invalid_regex_is_a_400_naming_the_field(server, model_name):
    with pytest.raises(openai.BadRequestError) as err:
        server.client().completions.create(
            model=model_name, prompt="x", extra_body={"structured_outputs": {"regex": "(ab"}}
        )
    assert err.value.body["param"] == "structured_outputs.regex"


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "add"}}])
def test_required_and_named_tool_calls_validate(server, model_name, choice):
    r = server.client(timeout=120).chat.completions.create(
        model=model_name,
        messages=ASK,
        tools=TOOLS,
        tool_choice=choice,
        parallel_tool_calls=False,
        temperature=1.0,
        seed=7,
        max_tokens=80,
    )
    c = r.choices[0]
    assert c.finish_reason == "tool_calls" and c.message.content is None
    (call,) = c.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    if isinstance(choice, dict):
        assert call.function.name == "add"
    jsonschema.validate(json.loads(call.function.arguments), PARAMS[call.function.name])


def test_streamed_tool_call_arrives_as_delta_tool_calls(server, model_name):
    stream = server.client(timeout=120).chat.completions.create(
        model=model_name,
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=80,
        stream=True,
    )
    chunks = [c for c in stream if c.choices]
    pieces = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert pieces and pieces[0].id and pieces[0].function.name == "get_weather"
    assert all(p.index == 0 for p in pieces)
    arguments = "".join(p.function.arguments or "" for p in pieces)
    jsonschema.validate(json.loads(arguments), WEATHER_PARAMS)
    assert not any(c.choices[0].delta.content for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_results_in_the_history_are_answered(server, model_name):
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C and sunny"},
    ]
    r = server.client(timeout=120).chat.completions.create(
        model=model_name,
        messages=history,
        tools=TOOLS,
        tool_choice="none",
        max_tokens=30,
        temperature=0,
    )
    assert r.choices[0].message.content and r.choices[0].message.tool_calls is None


TOOLS_TEMPLATE = Path(__file__).parents[2] / "examples" / "chat_templates" / "chatml_tools.jinja"


@pytest.fixture(scope="module")
def template_server(tmp_path_factory):
    """A server whose chat template (`--chat-template`) renders tools itself."""
    srv = start_server(tmp_path_factory, "chat-template", "--chat-template", str(TOOLS_TEMPLATE))
    yield srv
    assert srv.stop() == 0, srv.log()


def test_a_template_with_tool_syntax_renders_the_tools_and_the_history(template_server):
    http = template_server.http
    source = TOOLS_TEMPLATE.read_text()
    assert http.get("/tokenizer_info").json()["chat_template"] == source
    model = http.get("/v1/models").json()["data"][0]["id"]
    call = {"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C and sunny"},
        {"role": "user", "content": "And in Rome?"},
    ]
    r = template_server.client(timeout=120).chat.completions.create(
        model=model,
        messages=history,
        tools=TOOLS[:1],
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=60,
    )
    (made,) = r.choices[0].message.tool_calls
    assert made.function.name == "get_weather"
    jsonschema.validate(json.loads(made.function.arguments), WEATHER_PARAMS)
    # The prompt the server counted is the template's own rendering of the tools and of
    # the earlier call and its result (not the fallback prompt).
    rendered = (
        "<|im_start|>system\nYou can call functions. Their signatures are listed inside "
        "<tools></tools>:\n<tools>\n"
        + json.dumps(TOOLS[0]["function"], ensure_ascii=False)
        + '\n</tools>\nTo call one, write <tool_call>{"name": <function name>, '
        '"arguments": <arguments object>}</tool_call>.<|im_end|>\n'
        "<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n"
        "<|im_start|>assistant\n<tool_call>" + json.dumps(call) + "</tool_call><|im_end|>\n"
        "<|im_start|>user\n<tool_response>\n18 C and sunny\n</tool_response><|im_end|>\n"
        "<|im_start|>user\nAnd in Rome?<|im_end|>\n<|im_start|>assistant\n"
    )
    counted = http.post("/tokenize", json={"prompt": rendered}).json()["count"]
    assert r.usage.prompt_tokens == counted
