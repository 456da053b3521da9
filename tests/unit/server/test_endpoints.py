"""Tokenizer, model, health and stats endpoints; the body-size middleware; OpenAPI."""

from __future__ import annotations

import asyncio
import json
import threading

from fastapi.testclient import TestClient
from openapi_spec_validator import validate

from tests.unit.server.fake_engine import BOS, FakeEngine
from tokenmill.server.middleware import BodySizeLimit


def test_tokenize_prompt_adds_special_tokens_by_default(client: TestClient, engine: FakeEngine):
    r = client.post("/tokenize", json={"prompt": "ab"})
    assert r.json() == {"tokens": engine.tokenizer.encode("ab"), "count": 3, "max_model_len": 128}
    r = client.post("/tokenize", json={"prompt": "ab", "add_special_tokens": False})
    assert r.json()["tokens"] == engine.tokenizer.encode("ab", add_special_tokens=False)


def test_tokenize_messages_uses_the_chat_template(client: TestClient, engine: FakeEngine):
    r = client.post("/tokenize", json={"messages": [{"role": "user", "content": "hi"}]})
    expected = engine.tokenizer.encode("<user>hi\n<assistant>", add_special_tokens=False)
    assert r.json()["tokens"] == expected


def test_tokenize_needs_exactly_one_input(client: TestClient):
    assert client.post("/tokenize", json={}).status_code == 400
    both = {"prompt": "a", "messages": [{"role": "user", "content": "b"}]}
    assert client.post("/tokenize", json=both).status_code == 400


def test_detokenize_inverts_tokenize(client: TestClient):
    tokens = client.post("/tokenize", json={"prompt": "héllo"}).json()["tokens"]
    assert client.post("/detokenize", json={"tokens": tokens}).json() == {"prompt": "<s>héllo"}
    assert client.post("/detokenize", json={"tokens": [-1]}).status_code == 400


def test_tokenizer_info(client: TestClient):
    info = client.get("/tokenizer_info").json()
    assert info["eos_token"] == "</s>" and info["bos_token"] == "<s>"
    assert info["eos_token_id"] == 2
    assert "messages" in info["chat_template"]
    assert info["model_max_length"] == 128


def test_models(client: TestClient):
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    (card,) = models["data"]
    assert card["id"] == "fake-model" and card["object"] == "model"
    assert client.get("/v1/models/fake-model").json() == card


def test_the_engine_name_is_the_served_name(engine: FakeEngine):
    # --served-model-name sets the engine's model_name (ModelConfig); the server uses it.
    from tests.unit.server.conftest import make_client, wait_ready

    engine.model_name = "my/name"
    with make_client(engine) as c:
        wait_ready(c)
        assert c.get("/v1/models").json()["data"][0]["id"] == "my/name"
        assert c.get("/v1/models/my/name").status_code == 200
        r = c.post("/v1/completions", json={"model": "my/name", "prompt": "a", "max_tokens": 1})
        assert r.json()["model"] == "my/name"
        assert (
            c.post("/v1/completions", json={"model": "fake-model", "prompt": "a"}).status_code
            == 404
        )


def test_health_ready_version_stats(client: TestClient):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready"}
    assert client.get("/version").json()["version"]
    stats = client.get("/v1/engine/stats").json()
    assert stats["num_running"] == 0 and stats["kv_blocks_used"] == 0


def test_openapi_document_is_valid_and_lists_the_api(client: TestClient):
    doc = client.get("/openapi.json").json()
    validate(doc)
    for path in ["/v1/chat/completions", "/v1/completions", "/v1/models", "/tokenize", "/ready"]:
        assert path in doc["paths"]
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    assert "text/event-stream" in chat["responses"]["200"]["content"]
    assert "429" in chat["responses"]
    model = doc["components"]["schemas"]["ChatCompletionRequest"]["properties"]["model"]
    assert model["anyOf"][0]["enum"] == ["fake-model"]


async def _run_middleware(limit: int, chunks: list[bytes], content_length: int | None):
    seen = {}

    async def app(scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen["body"] = body
        seen["after"] = await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    incoming = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ] + [{"type": "http.disconnect"}]
    sent = []

    async def receive():
        return incoming.pop(0)

    async def send(message):
        sent.append(message)

    headers = [] if content_length is None else [(b"content-length", str(content_length).encode())]
    await BodySizeLimit(app, limit)({"type": "http", "headers": headers}, receive, send)
    return seen, sent


def test_middleware_refuses_declared_length_without_reading():
    seen, sent = asyncio.run(_run_middleware(10, [b"x" * 11], 11))
    assert seen == {} and sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"]["code"] == "request_too_large"


def test_middleware_counts_chunked_bodies():
    seen, sent = asyncio.run(_run_middleware(10, [b"x" * 6, b"y" * 6], None))
    assert seen == {} and sent[0]["status"] == 413


def test_middleware_replays_small_chunked_bodies_then_passes_disconnects():
    seen, sent = asyncio.run(_run_middleware(10, [b"ab", b"cd"], None))
    assert seen == {"body": b"abcd", "after": {"type": "http.disconnect"}}
    assert sent[0]["status"] == 200


def test_completion_prompt_of_ids_starts_with_given_ids(client: TestClient, engine: FakeEngine):
    client.post("/v1/completions", json={"prompt": [BOS, 50], "max_tokens": 1})
    assert engine.calls[0].prompt_token_ids == [BOS, 50]


def test_large_text_is_tokenized_off_the_event_loop(
    client: TestClient, engine: FakeEngine, monkeypatch
):
    threads = []
    encode = engine.tokenizer.encode

    def recording_encode(text, add_special_tokens=True):
        threads.append(threading.current_thread().name)
        return encode(text, add_special_tokens)

    monkeypatch.setattr(engine.tokenizer, "encode", recording_encode)
    small = client.post("/tokenize", json={"prompt": "a" * 100}).json()
    assert small["count"] == 101 and not threads[0].startswith("tokenmill-tokenize")
    big = client.post("/tokenize", json={"prompt": "a" * 20_000}).json()
    assert big["count"] == 20_001 and threads[1].startswith("tokenmill-tokenize")


def test_a_prompt_beyond_any_context_is_refused_without_tokenizing(
    client: TestClient, engine: FakeEngine, monkeypatch
):
    # Issue 14, item 4: a 7.9 MB prompt cost ~7 s of CPU before the length check.
    calls = []
    monkeypatch.setattr(engine.tokenizer, "encode", lambda *a, **k: calls.append(a) or [])
    too_long = "b" * (engine.inputs.max_prompt_chars + 1)
    for body, path in [
        ({"messages": [{"role": "user", "content": too_long}]}, "/v1/chat/completions"),
        ({"prompt": too_long}, "/v1/completions"),
        ({"prompt": ["ok", too_long]}, "/v1/completions"),
    ]:
        r = client.post(path, json=body)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "context_length_exceeded"
        assert "characters" in r.json()["error"]["message"]
    assert calls == [("ok", True)]
