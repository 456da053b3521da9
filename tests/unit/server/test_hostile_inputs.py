"""Issue 14, items 5, 6 and 11 over HTTP (fake engine): lone surrogates, requests that can
never fit, loose types, and the schema's word on empty prompts. Each is a 400 naming the
field, and the server goes on serving."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tests.unit.server.conftest import make_client, wait_ready
from tests.unit.server.fake_engine import FakeEngine

SUR = "\ud800"
CHAT = "/v1/chat/completions"
COMPLETE = "/v1/completions"


def post_raw(client: TestClient, path: str, body: dict):
    """JSON with lone surrogates escaped as \\ud800, exactly as a hostile client sends it."""
    data = json.dumps(body, ensure_ascii=True)
    return client.post(path, content=data, headers={"content-type": "application/json"})


def assert_serves(client: TestClient) -> None:
    r = client.post(CHAT, json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "path, body, param",
    [
        (CHAT, {"messages": [{"role": "user", "content": f"a{SUR}"}]}, "messages[0].content"),
        (
            CHAT,
            {"messages": [{"role": "user", "content": [{"type": "text", "text": f"x{SUR}"}]}]},
            "messages[0].content[0].text",
        ),
        (CHAT, {"messages": [{"role": "user", "content": "hi", "name": SUR}]}, "messages[0].name"),
        (COMPLETE, {"prompt": f"a{SUR}", "max_tokens": 2}, "prompt"),
        (COMPLETE, {"prompt": ["ok", f"a{SUR}"], "echo": True, "max_tokens": 2}, "prompt[1]"),
        (COMPLETE, {"prompt": "ok", "stop": [f"{SUR}"], "max_tokens": 2}, "stop[0]"),
        (COMPLETE, {"prompt": "ok", "max_tokens": 2, f"x{SUR}": 1}, None),  # a key: no field
        (COMPLETE, {"prompt": "ok", "max_tokens": 2, "model": SUR}, "model"),
        ("/tokenize", {"prompt": f"a{SUR}"}, "prompt"),
        ("/tokenize", {"messages": [{"role": "user", "content": SUR}]}, "messages[0].content"),
    ],
)
def test_lone_surrogates_are_a_400_naming_the_field(client, path, body, param, caplog):
    r = post_raw(client, path, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and "surrogate" in error["message"]
    assert "Traceback" not in caplog.text
    assert_serves(client)


@pytest.mark.parametrize(
    "body, param",
    [
        ({"prompt": "hi", "max_tokens": "10"}, "max_tokens"),
        ({"prompt": "hi", "n": "2"}, "n"),
        ({"prompt": "hi", "stream": "yes"}, "stream"),
        ({"prompt": [True]}, "prompt[0]"),
        ({"prompt": "hi", "temperature": "0.5"}, "temperature"),
        ({"prompt": "hi", "echo": 1}, "echo"),
        ({"prompt": "hi", "max_tokens": 2.5}, "max_tokens"),
    ],
)
def test_loose_types_are_refused_as_openai_does(client, body, param):
    r = client.post(COMPLETE, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_numbers_may_still_be_integers(client):
    body = {"prompt": "hi", "max_tokens": 2, "temperature": 0, "top_p": 1, "logit_bias": {"5": 1}}
    assert client.post(COMPLETE, json=body).status_code == 200


@pytest.mark.parametrize("prompt", ["", [], [""], [[]], [[5], []]])
def test_empty_prompts_are_refused_as_the_schema_says(client, prompt):
    r = client.post(COMPLETE, json={"prompt": prompt})
    assert r.status_code == 400 and r.json()["error"]["param"].startswith("prompt")
    schema = client.get("/openapi.json").json()["components"]["schemas"]["CompletionRequest"]
    branches = schema["properties"]["prompt"]["anyOf"]
    assert {b.get("minLength") or b.get("minItems") for b in branches} == {1}


def test_tokenize_schema_requires_exactly_one_of_prompt_or_messages(client):
    schema = client.get("/openapi.json").json()["components"]["schemas"]["TokenizeRequest"]
    assert schema["oneOf"] == [{"required": ["prompt"]}, {"required": ["messages"]}]
    for body in ({}, {"prompt": "a", "messages": [{"role": "user", "content": "b"}]}):
        assert client.post("/tokenize", json=body).status_code == 400
    assert client.post("/tokenize", json={"prompt": ""}).json()["count"] == 1


def test_more_sequences_than_the_server_holds_is_a_400_not_a_retryable_429():
    # Issue 14, item 6: 2,000 prompts on an idle server got queue_full with Retry-After: 1.
    engine = FakeEngine(max_sequences=20)
    with make_client(engine) as client:
        wait_ready(client)
        r = client.post(COMPLETE, json={"prompt": ["hi"] * 2000, "max_tokens": 1})
        assert r.status_code == 400 and "retry-after" not in r.headers
        error = r.json()["error"]
        assert error["code"] == "exceeds_capacity" and "at most 20" in error["message"]
        r = client.post(COMPLETE, json={"prompt": ["hi"] * 5, "n": 5, "max_tokens": 1})
        assert r.status_code == 400 and "makes 25 sequences" in r.json()["error"]["message"]
        assert engine.calls == []
        ok = client.post(COMPLETE, json={"prompt": ["hi"] * 4, "n": 5, "max_tokens": 1})
        assert ok.status_code == 200 and len(ok.json()["choices"]) == 20


def test_n_and_stop_limits_are_400s_before_any_tokenization():
    engine = FakeEngine()
    with make_client(engine) as client:
        wait_ready(client)
        r = client.post(COMPLETE, json={"prompt": "hi", "n": 17})
        assert r.status_code == 400 and r.json()["error"]["param"] == "n"
        r = client.post(COMPLETE, json={"prompt": "hi", "stop": ["x"] * 1000})
        assert r.status_code == 400 and "at most 32" in r.json()["error"]["message"]
        r = client.post(COMPLETE, json={"prompt": "hi", "stop": ["x" * 2000]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "stop"
        assert engine.calls == []
