"""`tokenmill serve --profile edge` on the default model answers as the default profile
does: the same greedy tokens, from a 64 MiB bfloat16 KV cache and one thread."""

from __future__ import annotations

import openai
import pytest

from tests.e2e.conftest import ServerProcess, start_server

PROMPTS = ["What is the capital of France?", "What is 2 + 2?", "Write one sentence about rivers."]


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory):
    srv = start_server(tmp_path_factory, "edge", "--profile", "edge")
    yield srv
    code = srv.stop()
    assert code == 0, f"edge server exited with {code}:\n{srv.log()}"


def greedy(srv: ServerProcess, prompt: str) -> tuple[str, str]:
    client = srv.client()
    model = client.models.list().data[0].id
    out = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        temperature=0,
        max_tokens=24,
    )
    return out.choices[0].message.content, out.choices[0].finish_reason


@pytest.mark.slow
def test_edge_answers_as_the_default_profile(edge: ServerProcess, server: ServerProcess):
    for prompt in PROMPTS:
        edge_text, edge_finish = greedy(edge, prompt)
        default_text, default_finish = greedy(server, prompt)
        assert edge_text and edge_text.strip()
        assert (edge_text, edge_finish) == (default_text, default_finish), prompt
    assert "paris" in greedy(edge, PROMPTS[0])[0].lower()
    assert "4" in greedy(edge, PROMPTS[1])[0]


@pytest.mark.slow
def test_edge_startup_and_optional_layers(edge: ServerProcess):
    log = edge.full_log()
    # The GGUF's 4-bit blocks are served natively; the KV cache is the profile's bf16.
    assert "KV cache bfloat16" in log and "gguf-blocks" in log, log[-2000:]
    assert edge.http.get("/metrics").status_code == 404  # metrics are an optional layer
    # A prompt past the profile's 2,048-token context is refused, not truncated.
    client = edge.client()
    model = client.models.list().data[0].id
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=model, prompt="word " * 2100, max_tokens=4)
    assert "2048" in str(err.value)
