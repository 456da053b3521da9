"""A client that leaves, or a request that runs too long, aborts its engine requests.

Driven at the ASGI level so the test controls exactly when `http.disconnect` arrives.
"""

from __future__ import annotations

import asyncio
import json
import time

from fastapi.testclient import TestClient

from tests.unit.server.conftest import make_client, wait_ready
from tests.unit.server.fake_engine import FakeEngine


def slow_engine() -> FakeEngine:
    return FakeEngine(script="x" * 1000, max_model_len=4096, step_delay_s=0.01)


async def asgi_post(
    app,
    path: str,
    payload: dict,
    disconnect_after_chunks: int | None = None,
    disconnect_after_s: float | None = None,
    disconnect_at_receive: int | None = None,
) -> list[dict]:
    """POSTs `payload` and returns the ASGI messages the app sent. The client
    disconnects after `disconnect_after_chunks` body chunks, after a delay, or as the
    answer to the app's `disconnect_at_receive`-th receive() call (1 is the body)."""
    body = json.dumps(payload).encode()
    sent: list[dict] = []
    gone = asyncio.Event()
    receives = 0

    async def receive():
        nonlocal receives
        receives += 1
        if receives == 1:
            return {"type": "http.request", "body": body, "more_body": False}
        if receives == disconnect_at_receive:
            gone.set()
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)
        await asyncio.sleep(0)  # a real server's send awaits the socket
        chunks = [m for m in sent if m["type"] == "http.response.body" and m.get("body")]
        if disconnect_after_chunks is not None and len(chunks) >= disconnect_after_chunks:
            gone.set()

    if disconnect_after_s is not None:
        asyncio.get_running_loop().call_later(disconnect_after_s, gone.set)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    await asyncio.wait_for(app(scope, receive, send), timeout=10)
    return sent


def wait_for_no_running(engine: FakeEngine, timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while engine.running:
        assert time.monotonic() < deadline, f"still running: {engine.running}"
        time.sleep(0.01)


def test_stream_disconnect_aborts_the_engine_request():
    engine = slow_engine()
    with make_client(engine) as c:
        wait_ready(c)
        body = {"messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 900}
        sent = c.portal.call(asgi_post, c.app, "/v1/chat/completions", body, 3)
        wait_for_no_running(engine)
    assert sent[0]["status"] == 200
    assert len(engine.aborted) == 1 and engine.aborted[0].startswith("chatcmpl-")
    streamed = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert b"[DONE]" not in streamed


def test_disconnect_before_the_first_frame_is_sent_aborts():
    # The client leaves after the first token is ready (receive 2 is the wait for it)
    # but before the stream body starts: the body generator never runs, so its cleanup
    # cannot be what aborts the engine request.
    engine = slow_engine()
    with make_client(engine) as c:
        wait_ready(c)
        body = {"prompt": "a", "stream": True, "max_tokens": 900}
        c.portal.call(asgi_post, c.app, "/v1/completions", body, None, None, 3)
        wait_for_no_running(engine)
    assert len(engine.aborted) == 1


def test_disconnect_while_waiting_for_a_whole_response_aborts():
    engine = slow_engine()
    with make_client(engine) as c:
        wait_ready(c)
        body = {"prompt": ["a", "b"], "max_tokens": 900}
        c.portal.call(asgi_post, c.app, "/v1/completions", body, None, 0.1)
        wait_for_no_running(engine)
    assert sorted(r.rsplit("-", 1)[1] for r in engine.aborted) == ["0", "1"]


def test_timeout_is_408_and_aborts():
    engine = slow_engine()
    with make_client(engine, request_timeout=0.2) as c:
        wait_ready(c)
        started = time.monotonic()
        r = c.post("/v1/completions", json={"prompt": "a", "max_tokens": 900})
        elapsed = time.monotonic() - started
        wait_for_no_running(engine)
    assert r.status_code == 408
    assert r.json()["error"]["code"] == "request_timeout"
    assert "0.2 s" in r.json()["error"]["message"]
    assert elapsed < 2
    assert len(engine.aborted) == 1


def test_timeout_mid_stream_ends_the_stream_with_an_error_event():
    engine = slow_engine()
    with make_client(engine, request_timeout=0.2) as c:
        wait_ready(c)
        r = c.post("/v1/completions", json={"prompt": "a", "max_tokens": 900, "stream": True})
        wait_for_no_running(engine)
    assert r.status_code == 200
    frames = r.text.strip().split("\n\n")
    assert frames[-1] == "data: [DONE]"
    assert json.loads(frames[-2][len("data: ") :])["error"]["code"] == "request_timeout"
    assert len(frames) > 3  # some text came before the timeout
    assert len(engine.aborted) == 1


def test_finished_requests_are_not_aborted(client: TestClient, engine: FakeEngine):
    client.post("/v1/completions", json={"prompt": "a", "max_tokens": 5, "n": 2})
    client.post("/v1/completions", json={"prompt": "a", "max_tokens": 5, "stream": True})
    assert engine.aborted == []
    assert engine.running == set()


def test_drain_lets_in_flight_streams_finish_with_abort_after_grace():
    engine = slow_engine()
    with make_client(engine, shutdown_grace=0.1) as c:
        wait_ready(c)

        async def stream_then_drain():
            task = asyncio.ensure_future(
                asgi_post(
                    c.app, "/v1/completions", {"prompt": "a", "max_tokens": 900, "stream": True}
                )
            )
            await asyncio.sleep(0.05)
            c.app.state.tokenmill.begin_drain()
            return await task

        sent = c.portal.call(stream_then_drain)
    streamed = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert b'"finish_reason":"abort"' in streamed
    assert streamed.endswith(b"data: [DONE]\n\n")
