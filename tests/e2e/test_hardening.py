"""Issue 14 on a real `tokenmill serve`: slow and idle connections do not lock out a
client, a drain answers 503 while it lasts, a stream cut by the grace period ends with
an error event, and SIGTERM while the model loads exits cleanly.

Every wait is bounded; nothing asserts a duration.
"""

from __future__ import annotations

import json
import signal
import socket
import time

import httpx
import pytest

from tests.e2e.conftest import READY_TIMEOUT_S, ServerProcess, start_server

pytestmark = pytest.mark.slow
BOUND_S = 60


def _chat(server: ServerProcess) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}
    return server.http.post("/v1/chat/completions", json=body)


def _closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(BOUND_S)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return True


def test_slowloris_and_idle_sockets_do_not_lock_out_a_client(tmp_path_factory):
    srv = start_server(
        tmp_path_factory, "guarded", "--header-timeout", "1", "--max-connections", "16"
    )
    try:
        # The pooled keep-alive connection left by the readiness polls is the oldest
        # one waiting for a request, so the cap closes it first: reusing it would race
        # that close. Every request below goes on a connection opened after the flood.
        srv.http.close()
        idle = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(40)]
        slow = socket.create_connection(("127.0.0.1", srv.port))
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: ")
        assert _closed_by_server(idle[0])  # by the cap of 16 or the 1 s header deadline
        with httpx.Client(base_url=srv.url, timeout=BOUND_S) as http:
            body = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}
            assert http.post("/v1/chat/completions", json=body).status_code == 200
            assert http.get("/health").status_code == 200
        big = socket.create_connection(("127.0.0.1", srv.port))
        big.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 100_000)
        big.settimeout(BOUND_S)
        assert big.recv(64).startswith(b"HTTP/1.1 431")
        for _ in range(3):  # the slowloris trickles; the deadline (1 s) still ends it
            try:
                slow.sendall(b"a")
            except OSError:
                break
            time.sleep(0.5)
        assert _closed_by_server(slow)
        for sock in [*idle, slow, big]:
            sock.close()
        srv.http = httpx.Client(base_url=srv.url, timeout=BOUND_S)
        assert _chat(srv).status_code == 200
    finally:
        assert srv.stop() == 0, srv.log()


def test_drain_answers_503_then_cut_stream_ends_with_an_error_event(tmp_path_factory):
    srv = start_server(tmp_path_factory, "draining", "--shutdown-grace", "3")
    body = {"prompt": "Count:", "max_tokens": 4000, "ignore_eos": True, "stream": True}
    events: list[str] = []
    refused = None
    with (
        httpx.Client(base_url=srv.url, timeout=BOUND_S) as http,
        http.stream("POST", "/v1/completions", json=body) as r,
    ):
        assert r.status_code == 200
        lines = r.iter_lines()
        for line in lines:
            if line.startswith("data: "):
                events.append(line[len("data: ") :])
                break
        srv.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + BOUND_S
        while refused is None and time.monotonic() < deadline:
            probe = srv.http.get("/ready")
            if probe.json().get("status") == "draining":
                refused = _chat(srv)
        events += [line[len("data: ") :] for line in lines if line.startswith("data: ")]
    code = srv.stop()
    assert refused is not None, "never saw the drain"
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "shutting_down"
    assert refused.headers["retry-after"] == "1"
    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    assert last["error"]["code"] == "shutting_down", last
    assert not any(
        c.get("choices") and c["choices"][0].get("finish_reason") == "abort"
        for c in map(json.loads, events[:-1])
    )
    assert code == 0, srv.log()


def test_sigterm_while_the_model_loads_exits_0(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("loading") / "serve.log")
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:  # listening (health answers) but not ready: the model is loading
            assert srv.proc.poll() is None, srv.log()
            assert time.monotonic() < deadline, srv.log()
            try:
                if srv.http.get("/ready").json().get("status") == "loading":
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        srv.proc.send_signal(signal.SIGTERM)
        code = srv.proc.wait(timeout=READY_TIMEOUT_S)
    finally:
        srv.stop()
    log = srv.log_path.read_text(errors="replace")
    assert code == 0, log[-6000:]
    assert "terminate called" not in log
