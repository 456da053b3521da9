"""`tokenmill serve --model gemma3-270m` as a subprocess, driven by the openai SDK."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import start_server
from tests.gemma.conftest import GEMMA_NAME

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory, gemma_file):
    # The default 1 GiB KV cache holds ~29k float32 tokens of Gemma's 18 layers, short
    # of its 32k context, so the context is stated.
    srv = start_server(tmp_path_factory, "gemma", "--model", GEMMA_NAME, "--max-model-len", "4096")
    yield srv
    code = srv.stop()
    assert code == 0, f"server exited with {code}:\n{srv.log()}"


def test_models_lists_gemma(server):
    ids = [m.id for m in server.client().models.list().data]
    assert ids == [GEMMA_NAME]


def test_chat_completion(server, gemma):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    resp = server.client().chat.completions.create(
        model=GEMMA_NAME, messages=messages, max_tokens=24, temperature=0
    )
    choice = resp.choices[0]
    assert resp.model == GEMMA_NAME and choice.message.role == "assistant"
    assert choice.message.content and choice.finish_reason in ("stop", "length")
    text = gemma.tokenizer.apply_chat_template(messages)
    assert resp.usage.prompt_tokens == len(gemma.tokenizer.encode(text, False))
    assert "<end_of_turn>" not in choice.message.content


def test_streamed_chat_matches_unstreamed(server):
    client = server.client()
    messages = [{"role": "user", "content": "Name three colours."}]
    whole = client.chat.completions.create(
        model=GEMMA_NAME, messages=messages, max_tokens=16, temperature=0
    )
    stream = client.chat.completions.create(
        model=GEMMA_NAME, messages=messages, max_tokens=16, temperature=0, stream=True
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces) == whole.choices[0].message.content
