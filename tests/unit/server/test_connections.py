"""Connection guards (issue 14, item 2) on a real uvicorn server over loopback.

A tiny ASGI app stands in for tokenmill's so that each test takes a second or two: the
guards live in the protocol class, below any app. Every attack runs while a well-behaved
client is served, and every socket read has a bound, so a regression fails, not hangs.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from tokenmill.server.connections import ConnectionLimits, guarded_protocol

READ_BOUND_S = 10.0
"""Longest any socket read waits; far above every deadline the tests configure."""


class _App:
    """200 "ok" for GET /; GET /block holds its response until `release` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.blocked = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] == "POST":
            while (await receive()).get("more_body"):
                pass
        if scope["path"] == "/block":
            self.blocked += 1
            while not self.release.is_set():
                await asyncio.sleep(0.01)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


class _Running:
    def __init__(self, app: _App, port: int, server: uvicorn.Server, thread: threading.Thread):
        self.app, self.port, self.server, self.thread = app, port, server, thread

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=READ_BOUND_S)
        return sock

    def get(self, path: str = "/") -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=READ_BOUND_S)


def _serve(limits: ConnectionLimits) -> Iterator[_Running]:
    app = _App()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        http=guarded_protocol(limits),
        log_config=None,
        lifespan="off",
        timeout_keep_alive=30,
        h11_max_incomplete_event_size=limits.max_header_bytes,
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + READ_BOUND_S
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield _Running(app, port, server, thread)
    finally:
        app.release.set()
        server.should_exit = True
        thread.join(READ_BOUND_S)
        sock.close()


@pytest.fixture
def guarded(request) -> Iterator[_Running]:
    limits = getattr(request, "param", None) or ConnectionLimits(
        header_timeout_s=0.5, body_timeout_s=0.5, max_connections=8, max_header_bytes=4096
    )
    yield from _serve(limits)


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (bounded)."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_slowloris_gets_408_and_is_disconnected_while_others_are_served(guarded):
    slow = guarded.connect()
    request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    sent = 0
    served = 0
    closed = False
    try:
        for byte in request:  # one byte every 20 ms: far slower than the 0.5 s deadline
            slow.sendall(bytes([byte]))
            sent += 1
            if sent % 10 == 0:
                assert guarded.get().status_code == 200  # others are served meanwhile
                served += 1
            time.sleep(0.02)
    except (BrokenPipeError, ConnectionResetError):
        closed = True
    reply = b"" if closed else _read_all(slow)
    slow.close()
    assert closed or reply.startswith(b"HTTP/1.1 408")
    assert sent < len(request), "the server waited for the whole trickled request"
    assert served >= 1


def test_silent_connection_is_closed_without_a_reply(guarded):
    idle = guarded.connect()
    assert _read_all(idle) == b""  # returns once the server closes it
    idle.close()


def test_burst_header_over_the_limit_gets_431(guarded):
    sock = guarded.connect()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
    reply = _read_all(sock)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 431")
    assert b"headers_too_large" in reply
    assert guarded.get().status_code == 200


def test_header_just_under_the_limit_is_served(guarded):
    sock = guarded.connect()
    head = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: "
    sock.sendall(head + b"a" * (4096 - len(head) - 4 - 100) + b"\r\n\r\n")
    reply = _read_all(sock)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 200")


def test_slow_body_gets_408(guarded):
    sock = guarded.connect()
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
    reply = _read_all(sock)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 408")
    assert b"body_timeout" in reply


def test_keep_alive_connection_serves_a_second_request(guarded):
    with httpx.Client(base_url=f"http://127.0.0.1:{guarded.port}", timeout=READ_BOUND_S) as c:
        assert c.get("/").status_code == 200
        assert c.get("/").status_code == 200


@pytest.mark.parametrize(
    "guarded",
    [ConnectionLimits(header_timeout_s=60, body_timeout_s=60, max_connections=4)],
    indirect=True,
)
def test_idle_connections_past_the_cap_make_room_for_a_real_client(guarded):
    idle = [guarded.connect() for _ in range(20)]  # 5x the cap, all silent
    try:
        for _ in range(3):
            assert guarded.get().status_code == 200
        closed = 0
        for sock in idle:
            sock.settimeout(0.2)
            try:
                if sock.recv(1) == b"":
                    closed += 1
            except TimeoutError:
                pass
            except ConnectionResetError:
                closed += 1
        assert closed >= 20 - 4 + 1  # the oldest were closed to keep at most 4 open
    finally:
        for sock in idle:
            sock.close()


@pytest.mark.parametrize(
    "guarded",
    [ConnectionLimits(header_timeout_s=60, body_timeout_s=60, max_connections=3)],
    indirect=True,
)
def test_newcomer_gets_503_when_every_connection_is_busy(guarded):
    busy = [guarded.connect() for _ in range(3)]
    try:
        for sock in busy:
            sock.sendall(b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
        deadline = time.monotonic() + READ_BOUND_S
        while guarded.app.blocked < 3:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        refused = guarded.get()
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "too_many_connections"
        guarded.app.release.set()
        for sock in busy:
            sock.settimeout(READ_BOUND_S)
            assert sock.recv(100).startswith(b"HTTP/1.1 200")
        assert guarded.get().status_code == 200
    finally:
        for sock in busy:
            sock.close()
