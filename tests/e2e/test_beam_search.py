"""Beam search through the official openai SDK (vLLM's extra fields in extra_body), on
the shared server with the default model. A stream carries the final beams in one
chunk per choice at the end: beams are reordered and replaced until the search ends, so
no earlier text is final."""

from __future__ import annotations

import openai
import pytest

from tests.e2e.conftest import ServerProcess

pytestmark = pytest.mark.slow
CHAT = [{"role": "user", "content": "Name three colours."}]
BEAM = {"use_beam_search": True, "best_of": 4, "length_penalty": 1.0}


def test_chat_beams_are_n_distinct_choices_and_stream_equals_non_stream(
    server: ServerProcess, model_name: str
):
    client = server.client()
    args = {"model": model_name, "messages": CHAT, "max_tokens": 24, "n": 3}
    r = client.chat.completions.create(**args, extra_body=BEAM)
    texts = [c.message.content for c in sorted(r.choices, key=lambda c: c.index)]
    assert [c.index for c in sorted(r.choices, key=lambda c: c.index)] == [0, 1, 2]
    assert len(set(texts)) == 3 and all(texts)
    assert all(c.finish_reason in ("stop", "length") for c in r.choices)
    assert r.usage.completion_tokens >= 3

    chunks = list(client.chat.completions.create(**args, stream=True, extra_body=BEAM))
    streamed = {i: "" for i in range(3)}
    for chunk in chunks:
        for c in chunk.choices:
            streamed[c.index] += c.delta.content or ""
    assert [streamed[i] for i in range(3)] == texts


def test_completion_beams_repeat_and_stream_at_the_end(server: ServerProcess, model_name: str):
    client = server.client()
    args = {"model": model_name, "prompt": "The capital of France is", "max_tokens": 12, "n": 2}
    extra = {"use_beam_search": True, "early_stopping": True}
    first = client.completions.create(**args, extra_body=extra)
    again = client.completions.create(**args, extra_body=extra)
    assert [c.text for c in first.choices] == [c.text for c in again.choices]
    text_chunks = [
        (c.index, c.text)
        for chunk in client.completions.create(**args, stream=True, extra_body=extra)
        for c in chunk.choices
        if c.text
    ]
    assert sorted(text_chunks) == sorted((c.index, c.text) for c in first.choices)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"use_beam_search": True, "temperature": 0.8}, "temperature"),
        ({"use_beam_search": True, "top_p": 0.5}, "top_p"),
        ({"use_beam_search": True, "n": 4, "best_of": 2}, "best_of"),
        ({"use_beam_search": True, "response_format": {"type": "json_object"}}, "response_format"),
        ({"length_penalty": 0.5}, "length_penalty"),
        ({"use_beam_search": True, "early_stopping": "sometimes"}, None),
    ],
)
def test_beam_conflicts_are_openai_400s(server: ServerProcess, model_name: str, extra, param):
    client = server.client()
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=model_name, messages=CHAT, max_tokens=4, extra_body=extra
        )
    body = err.value.body
    assert body["type"] == "invalid_request_error" or "message" in body
    if param is not None:
        assert body["param"] == param
