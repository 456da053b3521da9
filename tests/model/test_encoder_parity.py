"""Our all-MiniLM-L6-v2 against sentence-transformers on the same packaged files."""

from __future__ import annotations

import numpy as np
import pytest

from tokenmill.errors import ContextLengthError
from tokenmill.model.encoders import PACKAGED_ENCODERS, SentenceEncoder

pytestmark = pytest.mark.slow

SENTENCES = [
    "Hello, world!",
    "",
    "   ",
    "What is the capital of France?",
    "The quick brown fox jumps over the lazy dog near the riverbank at dawn.",
    "Numbers: 1234567890, 3.14159, -42, 1e10, 2024-11-27",
    "Unicode: café, naïve, Straße, Ελληνικά, русский, 日本語のテキスト, 한국어",
    "Emoji: 👋🏽 🇫🇷 👨‍👩‍👧‍👦 ✨🚀",
    "def f(x):\n    return {'a': [x ** 2 for x in range(10)]}\n",
    "Whitespace   runs\t\ttabs\r\nwindows\n\n\nand    more     ",
    "Le chat dort sur le canapé pendant que la pluie tombe.",
    "¿Dónde está la biblioteca más cercana?",
    "SELECT name, COUNT(*) FROM users GROUP BY name HAVING COUNT(*) > 1;",
    "URLs https://example.com/a?b=c&d=e#f and emails a.b@c.io",
    "[CLS] [SEP] [PAD] [MASK] literal special tokens in text",
    "\u200b zero width, \u00a0 nbsp, combining e\u0301",
    "A paragraph that is long enough to need many word pieces. " * 20,
]
OVERLONG = "Every sentence here adds a few more word pieces to the input. " * 40


@pytest.fixture(scope="module")
def reference():
    st = pytest.importorskip("sentence_transformers")
    return st.SentenceTransformer(str(PACKAGED_ENCODERS["all-minilm-l6-v2"].find()), device="cpu")


@pytest.fixture(scope="module")
def ours():
    return SentenceEncoder.load()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


def test_config_read_from_package(ours, reference):
    assert ours.max_length == reference.max_seq_length == 256
    assert ours.dim == 384
    assert ours.normalize


def test_batched_embeddings_match_sentence_transformers(ours, reference):
    expected = reference.encode(SENTENCES, batch_size=8, convert_to_numpy=True)
    got = ours.embed(SENTENCES).vectors
    cos = _cosines(got, expected)
    assert cos.min() >= 0.999, cos
    # Same weights, same float32 operations up to reduction order: far tighter in fact.
    assert np.abs(got - expected).max() < 1e-4


def test_one_at_a_time_equals_batched(ours):
    """Padding a sentence beside longer ones must not change its embedding."""
    batched = ours.embed(SENTENCES).vectors
    single = np.stack([ours.embed([s]).vectors[0] for s in SENTENCES])
    assert np.abs(batched - single).max() < 1e-5


def test_micro_batching_does_not_change_results(reference):
    small = SentenceEncoder.load(max_batch_size=3, max_batch_tokens=300)
    expected = reference.encode(SENTENCES, convert_to_numpy=True)
    assert _cosines(small.embed(SENTENCES).vectors, expected).min() >= 0.999


def test_token_counts_match_reference_tokenizer(ours, reference):
    got = ours.embed(SENTENCES).num_tokens
    expected = [len(reference.tokenizer(s)["input_ids"]) for s in SENTENCES]
    assert got == expected


def test_overlong_input_is_refused_unless_truncation_is_asked(ours, reference):
    with pytest.raises(ContextLengthError) as info:
        ours.embed(["short", OVERLONG])
    assert info.value.param == "input"
    assert "input[1]" in info.value.message and "256" in info.value.message

    result = ours.embed(["short", OVERLONG], truncate=True)
    assert result.truncated == [False, True]
    assert result.num_tokens[1] == 256
    expected = reference.encode([OVERLONG], convert_to_numpy=True)  # truncates at 256
    assert _cosines(result.vectors[1:], expected)[0] >= 0.999


def test_token_id_input_equals_text_input(ours, reference):
    text = "Token ids are the word pieces of the text, without [CLS] and [SEP]."
    ids = reference.tokenizer(text, add_special_tokens=False)["input_ids"]
    by_text, by_ids = ours.embed([text, ids]).vectors
    assert np.abs(by_text - by_ids).max() < 1e-6
