"""Gemma's SentencePiece vocabulary rebuilt from the GGUF against transformers' GGUF
tokenizer, and the chat template with the BOS it expects."""

from __future__ import annotations

import pytest

from tokenmill.model.chat_template import GEMMA_TEMPLATE

pytestmark = pytest.mark.slow

TEXTS = [
    "Hello world",
    " leading space",
    "  two leading spaces and trailing  ",
    "multiple   spaces\tand\ttabs\n\nand\n\n\nnewlines",
    "émojis 🤖🚀, 中文字符, العربية, Ünïcödé, e\u0301 (combining)",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "<div class='x'>html</div> <br/> </span>",
    "code:\n    def f(x):\n        return x ** 2  # square\n",
    "numbers 1234567890 3.14159 -42 1e-9",
    "a" * 300 + " " + "ab" * 50,
    "control \x00 \x07 bytes and \u200b zero width \u00a0 nbsp",
    "<bos> written in text, <unused5>, <mask>",
    "\u2581 a literal lower-one-eighth block",
]


@pytest.mark.parametrize("index", range(len(TEXTS)))
def test_encode_matches_transformers(gemma, hf_tokenizer, index):
    text = TEXTS[index]
    for special in (True, False):
        expected = hf_tokenizer.encode(text, add_special_tokens=special)
        assert gemma.tokenizer.encode(text, add_special_tokens=special) == expected
    ids = hf_tokenizer.encode(text, add_special_tokens=False)
    for skip in (True, False):
        assert gemma.tokenizer.decode(ids, skip_special_tokens=skip) == hf_tokenizer.decode(
            ids, skip_special_tokens=skip
        )


def test_special_tokens(gemma, hf_tokenizer):
    tok = gemma.tokenizer
    assert tok.vocab_size == len(hf_tokenizer) == gemma.arch.vocab_size == 262144
    assert (tok.bos_token, tok.eos_token) == ("<bos>", "<eos>")
    assert (tok.bos_token_id, tok.eos_token_id) == (2, 1) and tok.add_bos
    assert tok.encode("<end_of_turn>", False) == [106]
    assert 106 in gemma.arch.eos_token_ids and 1 in gemma.arch.eos_token_ids
    hf_special = {i for i, t in hf_tokenizer.added_tokens_decoder.items() if t.special}
    assert tok.all_special_ids == hf_special and len(hf_special) > 6000


CONVERSATIONS = [
    (
        [{"role": "user", "content": " Hi "}],
        "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    ),
    (
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": [{"type": "text", "text": "Again"}]},
        ],
        (
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
            "Hello!<end_of_turn>\n<start_of_turn>user\nAgain<end_of_turn>\n<start_of_turn>model\n"
        ),
    ),
]


@pytest.mark.parametrize("index", range(len(CONVERSATIONS)))
def test_chat_template_renders_gemma_turns(gemma, hf_tokenizer, index):
    """The file has no template; ours renders Gemma's turn format, the same text under
    transformers' Jinja environment, and tokenizes with exactly one BOS."""
    messages, expected = CONVERSATIONS[index]
    tok = gemma.tokenizer
    assert tok.chat_template == GEMMA_TEMPLATE
    text = tok.apply_chat_template(messages, add_generation_prompt=True)
    assert text == expected
    hf_text = hf_tokenizer.apply_chat_template(
        messages, chat_template=GEMMA_TEMPLATE, add_generation_prompt=True, tokenize=False
    )
    assert hf_text == expected
    ids = tok.encode(text, add_special_tokens=False)
    assert ids == hf_tokenizer.encode(expected, add_special_tokens=False)
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1


def test_chat_template_refuses_what_gemma_cannot_express(gemma):
    from tokenmill.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="alternate"):
        gemma.tokenizer.apply_chat_template([{"role": "assistant", "content": "first"}])
    with pytest.raises(InvalidRequestError, match="alternate"):
        gemma.tokenizer.apply_chat_template(
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
        )
