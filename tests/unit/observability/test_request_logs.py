"""Request ids: taken from X-Request-Id or made, echoed, on every log line of the request;
JSON lines under --log-format json; no prompt text in the logs."""

from __future__ import annotations

import io
import json
import logging
from contextlib import contextmanager

from tests.unit.gateway.conftest import chat, gateway_client
from tests.unit.server.fake_engine import FakeEngine
from tokenmill.observability.log_records import JsonFormatter, RequestIdFilter, configure_logging

SECRET_PROMPT = "my card number is 4111 and my secret word is pelican"


@contextmanager
def captured_json_logs():
    """Root logging at DEBUG into a buffer, one JSON object per line."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    lines: list[dict] = []
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        lines.extend(json.loads(line) for line in buffer.getvalue().splitlines())


def test_the_clients_request_id_is_echoed_and_on_every_line_of_its_request():
    with gateway_client(FakeEngine()) as c, captured_json_logs() as lines:
        ok = c.post(
            "/v1/chat/completions",
            json=chat(SECRET_PROMPT, temperature=0.5),
            headers={"X-Request-Id": "trace-abc-123"},
        )
        bad = c.post(
            "/v1/chat/completions",
            json=chat(SECRET_PROMPT, max_tokens=10**6),
            headers={"X-Request-Id": "trace-bad-456"},
        )
    assert ok.status_code == 200 and ok.headers["x-request-id"] == "trace-abc-123"
    assert bad.status_code == 400 and bad.headers["x-request-id"] == "trace-bad-456"
    ours = [line for line in lines if line["request_id"] in ("trace-abc-123", "trace-bad-456")]
    completion_id = ok.json()["id"]
    done = [line for line in ours if completion_id in line["message"]]
    assert len(done) == 1 and done[0]["request_id"] == "trace-abc-123"
    assert "done in" in done[0]["message"] and done[0]["level"] == "info"
    failed = [line for line in ours if line["request_id"] == "trace-bad-456"]
    assert failed and any("failed" in line["message"] for line in failed)
    # Every line logged while the requests ran belongs to one of them.
    during = [line for line in lines if line["logger"].startswith("tokenmill")]
    assert during and all(
        line["request_id"] in ("trace-abc-123", "trace-bad-456") for line in during
    )
    assert not any("pelican" in json.dumps(line) for line in lines)


def test_a_missing_or_unusable_id_is_replaced_by_a_fresh_one():
    with gateway_client(FakeEngine()) as c:
        plain = c.get("/v1/models")
        spaced = c.get("/v1/models", headers={"X-Request-Id": "has a space"})
        huge = c.get("/v1/models", headers={"X-Request-Id": "x" * 500})
    ids = [r.headers["x-request-id"] for r in (plain, spaced, huge)]
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert len(set(ids)) == 3


def test_configure_logging_writes_text_or_json_with_the_request_id(capsys):
    from tokenmill.observability.log_records import request_id_var

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        for fmt in ("json", "text"):
            configure_logging("info", fmt)
            token = request_id_var.set("rid-7")
            logging.getLogger("tokenmill.test").info("hello %s", fmt)
            request_id_var.reset(token)
            logging.getLogger("tokenmill.test").debug("not shown at info")
        err = capsys.readouterr().err.splitlines()
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    assert len(err) == 2
    as_json = json.loads(err[0])
    assert as_json["message"] == "hello json" and as_json["request_id"] == "rid-7"
    assert err[1].endswith("INFO tokenmill.test [rid-7]: hello text")
