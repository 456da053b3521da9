"""Every failure is an OpenAI-shaped error with the right status and an actionable message."""

from __future__ import annotations

import logging
import threading

import pytest
from fastapi.testclient import TestClient

from tests.unit.server.conftest import LOCAL, make_client, wait_ready
from tests.unit.server.fake_engine import FakeEngine

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "hi"}]


def error_of(r, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_missing_field_is_400_not_a_pydantic_dump(client: TestClient):
    err = error_of(client.post(CHAT, json={"model": "fake-model"}), 400)
    assert err["type"] == "invalid_request_error"
    assert err["param"] == "messages"
    assert "messages: Field required" in err["message"]
    assert "input" not in err["message"] and "{'type'" not in err["message"]


def test_nested_field_error_names_the_path(client: TestClient):
    r = client.post(CHAT, json={"messages": [{"role": "robot", "content": "x"}]})
    err = error_of(r, 400)
    assert err["param"] == "messages[0].role"


def test_out_of_range_value_is_400_naming_the_field(client: TestClient):
    err = error_of(client.post(CHAT, json={"messages": USER, "temperature": -1}), 400)
    assert err["param"] == "temperature"
    assert "greater than or equal to 0" in err["message"]


def test_malformed_json_is_400(client: TestClient):
    r = client.post(CHAT, content=b'{"messages": [', headers={"content-type": "application/json"})
    err = error_of(r, 400)
    assert "not valid JSON" in err["message"]


def test_nan_is_refused(client: TestClient):
    body = b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}'
    r = client.post(CHAT, content=body, headers={"content-type": "application/json"})
    assert error_of(r, 400)["param"] == "temperature"


def test_unknown_model_is_404(client: TestClient):
    err = error_of(client.post(CHAT, json={"messages": USER, "model": "gpt-9"}), 404)
    assert err["code"] == "model_not_found"
    assert "'gpt-9'" in err["message"] and "'fake-model'" in err["message"]
    assert error_of(client.get("/v1/models/gpt-9"), 404)["param"] == "model"


def test_unknown_route_and_method_are_shaped(client: TestClient):
    assert "no route" in error_of(client.get("/v1/nothing"), 404)["message"]
    assert "not allowed" in error_of(client.get(CHAT), 405)["message"]


def test_context_length_is_400_with_both_numbers(client: TestClient):
    r = client.post("/v1/completions", json={"prompt": "abc", "max_tokens": 200})
    err = error_of(r, 400)
    assert err["code"] == "context_length_exceeded" and err["param"] == "prompt"
    assert "4 tokens" in err["message"] and "128" in err["message"]


def test_queue_full_is_429_with_retry_after(client: TestClient, engine: FakeEngine):
    engine.queue_full = True
    r = client.post(CHAT, json={"messages": USER})
    err = error_of(r, 429)
    assert err["type"] == "rate_limit_error"
    assert r.headers["retry-after"] == "2"


def test_queue_full_on_a_stream_is_429_before_any_byte(client: TestClient, engine: FakeEngine):
    engine.queue_full = True
    r = client.post(CHAT, json={"messages": USER, "stream": True})
    assert error_of(r, 429)["code"] == "queue_full"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        (
            {"response_format": {"type": "json_object"}, "structured_outputs": {"regex": "a"}},
            "structured_outputs",
        ),
        ({"structured_outputs": {"regex": "a", "choice": ["b"]}}, "structured_outputs"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, None),
    ],
)
def test_unsupported_features_are_refused_clearly(client: TestClient, body: dict, param):
    err = error_of(client.post(CHAT, json={"messages": USER, **body}), 400)
    if param:
        assert err["param"] == param
    else:
        assert err["param"] == "messages[0].content[0].type"
        assert "'image_url' is not supported" in err["message"]


def test_prompt_token_ids_outside_vocab_are_refused(client: TestClient):
    err = error_of(client.post("/v1/completions", json={"prompt": [1, 99999]}), 400)
    assert "99999" in err["message"] and err["param"] == "prompt"


def test_empty_prompt_is_refused(client: TestClient):
    assert error_of(client.post("/v1/completions", json={"prompt": []}), 400)["param"] == "prompt"


def test_oversized_body_is_413(client: TestClient):
    big = {"messages": [{"role": "user", "content": "x" * 70_000}]}
    err = error_of(client.post(CHAT, json=big), 413)
    assert "65536 bytes" in err["message"]


def test_unknown_fields_are_accepted_and_logged_once(client: TestClient, caplog):
    caplog.set_level(logging.WARNING, logger="tokenmill.server.state")
    for _ in range(3):
        assert (
            client.post(CHAT, json={"messages": USER, "max_tokens": 1, "frob": 1}).status_code
            == 200
        )
    logged = [r for r in caplog.records if "'frob'" in r.getMessage()]
    assert len(logged) == 1


def test_unknown_field_memory_is_bounded(client: TestClient, caplog):
    from tokenmill.protocol.common import OpenAIModel
    from tokenmill.server.state import MAX_LOGGED_FIELDS

    caplog.set_level(logging.WARNING, logger="tokenmill.server.state")
    state = client.app.state.tokenmill
    for i in range(MAX_LOGGED_FIELDS + 50):
        state.unknown_fields("/x", OpenAIModel(**{f"f{i}": 1}))
    assert len(state._unknown_fields_logged) == MAX_LOGGED_FIELDS
    assert sum("no longer logging" in r.getMessage() for r in caplog.records) == 1


def test_unexpected_error_is_500_shaped(client: TestClient, engine: FakeEngine):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    engine.generate = broken
    with TestClient(client.app, raise_server_exceptions=False, base_url=LOCAL) as c:
        err = error_of(c.post(CHAT, json={"messages": USER}), 500)
    assert err["type"] == "server_error" and "RuntimeError" in err["message"]


def test_loading_is_503_then_ready():
    release = threading.Event()
    engine = FakeEngine()

    def slow_factory():
        release.wait(5)
        return engine

    from tokenmill.config import ServerConfig
    from tokenmill.server.app import build_app

    with TestClient(build_app(ServerConfig(), slow_factory), base_url=LOCAL) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/ready").status_code == 503
        r = c.post(CHAT, json={"messages": USER})
        assert error_of(r, 503)["code"] == "model_loading"
        assert r.headers["retry-after"] == "2"
        release.set()
        wait_ready(c)
        assert c.post(CHAT, json={"messages": USER, "max_tokens": 1}).status_code == 200


def test_failed_load_reports_and_calls_on_fatal():
    from tokenmill.config import ServerConfig
    from tokenmill.errors import ModelNotFoundError
    from tokenmill.server.app import build_app

    def factory():
        raise ModelNotFoundError("no such model 'x'")

    fatal = []
    app = build_app(ServerConfig(), factory, on_fatal=fatal.append)
    with TestClient(app, base_url=LOCAL) as c:
        for _ in range(100):
            if fatal:
                break
            c.get("/health")
        assert isinstance(fatal[0], ModelNotFoundError)
        assert c.get("/health").status_code == 503
        assert "no such model" in error_of(c.get("/v1/models"), 503)["message"]


def test_draining_refuses_new_requests(engine: FakeEngine):
    with make_client(engine, shutdown_grace=0.5) as c:
        wait_ready(c)
        c.portal.call(c.app.state.tokenmill.begin_drain)
        assert c.get("/ready").status_code == 503
        err = error_of(c.post(CHAT, json={"messages": USER}), 503)
        assert err["code"] == "shutting_down"
    assert engine.shutdown_grace == 0.5


def test_unknown_field_names_in_any_script_are_named_in_the_header(client: TestClient):
    body = {"prompt": "a", "max_tokens": 1, "\U0001d413\u00e9": 1, "x" * 2000: 2}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200
    header = r.headers["x-tokenmill-ignored-fields"]
    assert header.startswith("%F0%9D%90%93%C3%A9,") and header.endswith(",...")
    assert len(header) <= 1030
