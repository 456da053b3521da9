"""Our GGUF-built tokenizer against transformers' tokenizer for the same file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenmill.model.chat_template import read_chat_template

pytestmark = pytest.mark.slow

TEXTS = [
    "Hello, world!",
    "",
    " leading space and trailing space ",
    "Numbers: 1234567890, 3.14159, -42, 1e10, 2024-11-27",
    "Unicode: café, naïve, Straße, Ελληνικά, русский, 日本語のテキスト, 한국어",
    "Emoji: 👋🏽 🇫🇷 👨‍👩‍👧‍👦 ✨🚀",
    "def f(x):\n    return {'a': [x ** 2 for x in range(10)]}\n\n\n",
    "Whitespace   runs\t\ttabs\r\nwindows\n\n\nand    more     ",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "Specials glued:<|endoftext|>x<|im_end|><|im_start|>",
    "Don't they'll we've I'm you'd IT'S",
    "URLs https://example.com/a?b=c&d=e#f and emails a.b@c.io",
    "\u200b zero width, \u00a0 nbsp, \ufeff bom, combining e\u0301",
]

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Tell me a joke 😀"},
    ],
]


@pytest.fixture(scope="module")
def ours(smollm):
    return smollm.tokenizer


@pytest.mark.parametrize("text", TEXTS)
def test_encode_matches_transformers(ours, hf_tokenizer, text):
    assert ours.encode(text) == hf_tokenizer.encode(text)
    assert ours.encode(text, add_special_tokens=False) == hf_tokenizer.encode(
        text, add_special_tokens=False
    )


@pytest.mark.parametrize("text", TEXTS)
def test_decode_matches_transformers(ours, hf_tokenizer, text):
    ids = hf_tokenizer.encode(text)
    assert ours.decode(ids, skip_special_tokens=False) == hf_tokenizer.decode(
        ids, skip_special_tokens=False
    )
    assert ours.decode(ids) == hf_tokenizer.decode(ids, skip_special_tokens=True)
    assert ours.convert_ids_to_tokens(ids) == hf_tokenizer.convert_ids_to_tokens(ids)


def test_digits_are_split_one_by_one(ours):
    ids = ours.encode("12345")
    assert ours.convert_ids_to_tokens(ids) == ["1", "2", "3", "4", "5"]


def test_special_tokens(ours, hf_tokenizer):
    assert (ours.bos_token, ours.bos_token_id) == ("<|im_start|>", 1)
    assert (ours.eos_token, ours.eos_token_id) == ("<|im_end|>", 2)
    assert ours.eos_token_id == hf_tokenizer.eos_token_id
    assert ours.add_bos is False
    assert ours.vocab_size == len(hf_tokenizer) == 49152
    assert set(hf_tokenizer.all_special_ids) <= ours.all_special_ids
    assert ours.all_special_ids == set(range(17))
    assert ours.encode("<|im_end|>") == [2]


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_template_matches_transformers(ours, hf_tokenizer, messages, add_generation_prompt):
    expected = hf_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    assert ours.apply_chat_template(messages, add_generation_prompt) == expected


def test_sentencepiece_merges_follow_piece_rank():
    """Merges come from the vocabulary's own order: a piece made earlier merges first,
    and a piece's longer left split comes before its shorter one."""
    from tokenmill.model.sentencepiece import implied_merges, spelled_pieces

    pieces = spelled_pieces(["a", "b", "c", "ab", "bc", "abc", "  "])
    assert pieces[-1] == "\u2581\u2581"
    assert implied_merges(pieces) == [("a", "b"), ("b", "c"), ("ab", "c"), ("a", "bc")]


TOOLS_TEMPLATE = Path(__file__).parents[2] / "examples" / "chat_templates" / "chatml_tools.jinja"
TOOL_DEFS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
TOOL_CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"celsius": 18}'},
]


def test_a_tool_template_renders_tools_as_transformers_does(ours, hf_tokenizer):
    """`--chat-template` with a template that takes `tools`: the same text as
    transformers' apply_chat_template(..., tools=...) with that template."""
    source = read_chat_template(str(TOOLS_TEMPLATE))
    tok = ours.with_chat_template(source)
    assert tok.native_tools and not ours.native_tools
    for conversation, tools in [(TOOL_CONVERSATION, TOOL_DEFS), (CONVERSATIONS[1], None)]:
        want = hf_tokenizer.apply_chat_template(
            conversation,
            tools=tools,
            chat_template=source,
            tokenize=False,
            add_generation_prompt=True,
        )
        assert tok.apply_chat_template(conversation, tools=tools) == want
    # The copy leaves the model's own template alone.
    assert ours.apply_chat_template(CONVERSATIONS[0]) == hf_tokenizer.apply_chat_template(
        CONVERSATIONS[0], tokenize=False, add_generation_prompt=True
    )
