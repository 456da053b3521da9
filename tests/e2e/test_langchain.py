"""LangChain's ChatOpenAI against tokenmill: `bind_tools` and `with_structured_output`
(the json_schema method, i.e. response_format) on the real server."""

from __future__ import annotations

import jsonschema
import langchain_openai
import pytest

pytestmark = pytest.mark.slow

WEATHER = {
    "title": "get_weather",
    "description": "Current weather in a city",
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 20}, "unit": {"enum": ["c", "f"]}},
    "required": ["city", "unit"],
}


def chat(server, model_name):
    return langchain_openai.ChatOpenAI(
        base_url=f"{server.url}/v1",
        api_key="unused",
        model=model_name,
        temperature=0,
        max_tokens=80,
        max_retries=0,
        timeout=120,
    )


def test_bind_tools_returns_a_valid_call(server, model_name):
    bound = chat(server, model_name).bind_tools(
        [WEATHER], tool_choice="get_weather", parallel_tool_calls=False
    )
    message = bound.invoke("What is the weather in Paris?")
    (call,) = message.tool_calls
    assert call["name"] == "get_weather" and call["id"]
    jsonschema.validate(call["args"], WEATHER)


def test_with_structured_output_json_schema(server, model_name):
    schema = {
        "title": "city",
        "description": "A city",
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 30},
            "population": {"type": "integer", "minimum": 1},
        },
        "required": ["name", "population"],
        "additionalProperties": False,
    }
    structured = chat(server, model_name).with_structured_output(schema, method="json_schema")
    result = structured.invoke("Describe a city.")
    jsonschema.validate(result, schema)
