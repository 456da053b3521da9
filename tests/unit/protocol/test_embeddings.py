"""The embeddings request/response models and the pure step between them, with the
real all-MiniLM-L6-v2 encoder."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from pydantic import ValidationError

from tokenmill.errors import ContextLengthError, InvalidRequestError
from tokenmill.model.encoders import SentenceEncoder
from tokenmill.protocol.embeddings import (
    MAX_EMBEDDING_INPUTS,
    EmbeddingRequest,
    create_embedding_response,
)

MODEL = "all-minilm-l6-v2"


@pytest.fixture(scope="module")
def encoder():
    return SentenceEncoder.load()


def respond(encoder, **body):
    return create_embedding_response(EmbeddingRequest(**body), encoder, MODEL)


def test_single_string(encoder):
    resp = respond(encoder, input="The cat sat on the mat.")
    body = resp.model_dump()
    assert body["object"] == "list" and body["model"] == MODEL
    [item] = body["data"]
    assert item["object"] == "embedding" and item["index"] == 0
    vec = np.array(item["embedding"])
    assert vec.shape == (384,)
    assert abs(np.linalg.norm(vec) - 1) < 1e-5
    assert np.abs(vec - encoder.embed(["The cat sat on the mat."]).vectors[0]).max() < 1e-7
    # [CLS] the cat sat on the mat . [SEP]
    assert body["usage"] == {"prompt_tokens": 9, "total_tokens": 9}


def test_list_keeps_order_and_sums_usage(encoder):
    texts = ["first input", "a second, longer input than the first", "third"]
    resp = respond(encoder, input=texts)
    expected = encoder.embed(texts)
    assert [d.index for d in resp.data] == [0, 1, 2]
    got = np.array([d.embedding for d in resp.data])
    assert np.abs(got - expected.vectors).max() < 1e-7
    assert resp.usage.prompt_tokens == resp.usage.total_tokens == sum(expected.num_tokens)


def test_token_ids_embed_like_their_text(encoder):
    text = "Token ids are word pieces."
    ids = encoder.tokenizer.encode(text, add_special_tokens=False).ids
    by_text = respond(encoder, input=text).data[0].embedding
    by_ids = respond(encoder, input=ids).data[0].embedding
    by_lists = respond(encoder, input=[ids, ids]).data
    assert np.abs(np.array(by_text) - np.array(by_ids)).max() < 1e-6
    assert len(by_lists) == 2
    assert np.abs(np.array(by_lists[1].embedding) - np.array(by_ids)).max() < 1e-6


def test_base64_is_little_endian_float32(encoder):
    floats = respond(encoder, input=["hello", "world"]).data
    packed = respond(encoder, input=["hello", "world"], encoding_format="base64").data
    for f, p in zip(floats, packed, strict=True):
        assert isinstance(p.embedding, str)
        raw = base64.b64decode(p.embedding)
        assert len(raw) == 384 * 4
        assert np.frombuffer(raw, dtype="<f4").tolist() == f.embedding


def test_openai_sdk_reads_the_response(encoder):
    openai_types = pytest.importorskip("openai.types")
    resp = respond(encoder, input=["a", "b"], user="u-1")
    parsed = openai_types.CreateEmbeddingResponse.model_validate(resp.model_dump())
    assert len(parsed.data) == 2 and parsed.usage.total_tokens == resp.usage.total_tokens


def test_dimensions_only_the_models_own(encoder):
    assert len(respond(encoder, input="x", dimensions=384).data[0].embedding) == 384
    with pytest.raises(InvalidRequestError) as info:
        respond(encoder, input="x", dimensions=256)
    assert info.value.param == "dimensions" and "384" in info.value.message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input": ""}, r"input\[0\] is an empty string"),
        ({"input": []}, "empty list"),
        ({"input": ["ok", ""]}, r"input\[1\] is an empty string"),
        ({"input": [[101], []]}, r"input\[1\] is an empty token list"),
        ({"input": ["x"] * (MAX_EMBEDDING_INPUTS + 1)}, "at most 2048"),
        ({"input": [5, 10**9]}, "vocabulary"),
    ],
)
def test_bad_inputs_are_refused_with_param_input(encoder, body, message):
    with pytest.raises(InvalidRequestError, match=message) as info:
        respond(encoder, **body)
    assert info.value.param == "input" and info.value.status_code == 400


@pytest.mark.parametrize(
    "value",
    [None, 5, [1.5], [-1], [True, False], ["a", 1], [["a"]], {"text": "x"}, [[1], "a"]],
)
def test_malformed_input_fails_validation(value):
    with pytest.raises(ValidationError):
        EmbeddingRequest(input=value)


def test_bad_encoding_format_fails_validation():
    with pytest.raises(ValidationError):
        EmbeddingRequest(input="x", encoding_format="int8")


def test_overlong_input_needs_truncate(encoder):
    long = "tokens " * 400
    with pytest.raises(ContextLengthError) as info:
        respond(encoder, input=["short", long])
    assert info.value.code == "context_length_exceeded" and "input[1]" in info.value.message
    resp = respond(encoder, input=["short", long], truncate=True)
    assert resp.usage.prompt_tokens == 3 + 256


def test_unknown_fields_are_kept_not_refused():
    req = EmbeddingRequest(input="x", some_future_field=1)
    assert req.model_extra == {"some_future_field": 1}
