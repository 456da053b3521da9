"""Tools through a chat template that renders them (`--chat-template`), not the fallback
prompt: which templates qualify, what reaches the template, and the setting's errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer as RustTokenizer
from tokenizers import models

from tokenmill.errors import ConfigError
from tokenmill.gateway.prompts import render_chat
from tokenmill.model.chat_template import read_chat_template, speaks_hermes_tools
from tokenmill.model.tokenizer import Tokenizer
from tokenmill.protocol.chat import ChatCompletionRequest
from tokenmill.protocol.tools import template_tools

TEMPLATE = Path(__file__).parents[3] / "examples" / "chat_templates" / "chatml_tools.jinja"
# Llama 3.1 takes `tools` but spells calls as bare JSON: the tool grammar's <tool_call>
# spelling would contradict it, so such templates keep the fallback prompt.
LLAMA31_LIKE = (
    "{% if tools %}{% for t in tools %}{{ t | tojson }}{% endfor %}"
    'Respond with {"name": function name, "parameters": arguments}{% endif %}'
    "{% for m in messages %}{{ m['content'] }}{% endfor %}"
)


def tokenizer(template: str | None) -> Tokenizer:
    tok = Tokenizer(RustTokenizer(models.BPE()), None, None, None)
    return tok if template is None else tok.with_chat_template(template)


def test_only_templates_that_spell_calls_as_tool_call_tags_render_tools():
    assert speaks_hermes_tools(read_chat_template(str(TEMPLATE)))
    assert not speaks_hermes_tools(LLAMA31_LIKE)
    assert not speaks_hermes_tools("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    assert tokenizer(read_chat_template(str(TEMPLATE))).native_tools
    assert not tokenizer(LLAMA31_LIKE).native_tools and not tokenizer(None).native_tools


def test_the_template_gets_the_tools_and_the_tool_turns_as_they_were_sent():
    body = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_7",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_7", "content": "18 C"},
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "get_weather", "description": "Weather now"},
                }
            ],
        }
    )
    tok = tokenizer(read_chat_template(str(TEMPLATE)))
    text = render_chat(tok, body.messages, tools=template_tools(body.tool_mode()))
    # The tool's definition, with the default empty parameters object filled in.
    assert (
        '<tools>\n{"name": "get_weather", "description": "Weather now", "parameters": '
        '{"type": "object", "properties": {}}}\n</tools>'
    ) in text
    # The earlier call: its JSON-text arguments reach the template as an object.
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>' in text
    assert "<tool_response>\n18 C\n</tool_response>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_a_missing_or_broken_template_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="Cannot read the chat template") as exc:
        read_chat_template(str(tmp_path / "nope.jinja"))
    assert exc.value.setting == "chat_template"
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% for m in messages %}{{ m['content'] }}")
    with pytest.raises(ConfigError, match="not a valid Jinja template"):
        read_chat_template(str(bad))
