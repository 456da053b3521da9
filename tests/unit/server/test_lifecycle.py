"""Health, readiness, loading and draining as clients see them (issue 14, items 7, 8, 10).

The engine is the fake one, with its health probe replaced where a test needs a stalled
or dead engine; the real engine's thread is killed in tests/engine/test_engine_failure.py.
"""

from __future__ import annotations

import asyncio
import threading

from fastapi.testclient import TestClient

from tests.unit.server.conftest import LOCAL, make_client, wait_ready
from tests.unit.server.fake_engine import FakeEngine
from tokenmill.engine.async_engine import EngineHealth

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "hi"}]


def _probe(engine: FakeEngine, **health) -> None:
    engine.health = lambda: EngineHealth(**health)  # type: ignore[attr-defined]


def test_health_fails_while_work_waits_on_a_stalled_engine():
    engine = FakeEngine()
    with make_client(engine, engine_stall_timeout=5.0) as c:
        wait_ready(c)
        _probe(engine, alive=True, busy=False, seconds_since_progress=600.0)
        assert c.get("/health").status_code == 200  # idle for long: fine
        _probe(engine, alive=True, busy=True, seconds_since_progress=1.0)
        assert c.get("/health").status_code == 200  # busy and stepping: fine
        _probe(engine, alive=True, busy=True, seconds_since_progress=6.0)
        r = c.get("/health")
        assert r.status_code == 503 and r.json() == {"status": "engine_stalled"}
        assert c.get("/ready").status_code == 503


def test_health_fails_when_the_engine_thread_is_dead():
    engine = FakeEngine()
    with make_client(engine) as c:
        wait_ready(c)
        _probe(engine, alive=False, busy=False, seconds_since_progress=0.0, failure="boom")
        r = c.get("/health")
        assert r.status_code == 503 and r.json() == {"status": "engine_dead"}
        assert c.get("/ready").json() == {"status": "engine_dead"}


def test_chat_naming_a_model_while_loading_is_503_model_loading_not_404():
    release = threading.Event()
    engine = FakeEngine()

    def slow_factory() -> FakeEngine:
        release.wait(5)
        return engine

    from tokenmill.config import ServerConfig
    from tokenmill.server.app import build_app

    with TestClient(build_app(ServerConfig(), slow_factory), base_url=LOCAL) as c:
        for path, body in [
            (CHAT, {"model": "smollm2", "messages": USER}),
            ("/v1/completions", {"model": "smollm2", "prompt": "x"}),
        ]:
            r = c.post(path, json=body)
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "model_loading"
            assert "retry-after" in r.headers
        assert c.get("/v1/models/smollm2").json()["error"]["code"] == "model_loading"
        release.set()
        wait_ready(c)
        r = c.post(CHAT, json={"model": "smollm2", "messages": USER})
        assert r.status_code == 404  # loaded: now the name is known to be wrong


def test_draining_server_answers_503_with_retry_after_and_ready_fails():
    engine = FakeEngine(step_delay_s=0.05)
    with make_client(engine, shutdown_grace=5.0) as c:
        wait_ready(c)
        state = c.app.state.tokenmill
        engine.running.add("someone")  # keeps the drain going
        c.portal.call(_begin_drain, state)
        try:
            assert c.get("/ready").json() == {"status": "draining"}
            assert c.get("/ready").status_code == 503
            assert c.get("/health").status_code == 200  # alive, just leaving
            r = c.post(CHAT, json={"messages": USER})
            assert r.status_code == 503
            assert r.json()["error"]["code"] == "shutting_down"
            assert r.headers["retry-after"] == "1"
        finally:
            engine.running.clear()


async def _begin_drain(state) -> None:
    state.begin_drain()
    await asyncio.sleep(0)


def test_loopback_server_refuses_foreign_host_names_and_serves_its_own():
    engine = FakeEngine()
    with make_client(engine) as c:  # listens on 127.0.0.1 (the default)
        wait_ready(c)
        for host in ["127.0.0.1:8000", "localhost", "LOCALHOST:1", "[::1]:8000"]:
            assert c.get("/v1/models", headers={"host": host}).status_code == 200, host
        for host in ["attacker.example", "attacker.example:8000", "127.0.0.1.nip.io"]:
            r = c.get("/v1/models", headers={"host": host})
            assert r.status_code == 400, host
            assert r.json()["error"]["code"] == "host_not_allowed"
        r = c.post(CHAT, json={"messages": USER}, headers={"host": "rebound.example"})
        assert r.status_code == 400 and engine.calls == []  # refused before the engine


def test_allowed_hosts_setting_and_a_public_bind_accept_other_names():
    engine = FakeEngine()
    with make_client(engine, allowed_hosts=("api.example.com", "*.corp.example")) as c:
        wait_ready(c)
        assert c.get("/v1/models", headers={"host": "api.example.com"}).status_code == 200
        assert c.get("/v1/models", headers={"host": "a.corp.example"}).status_code == 200
        assert c.get("/v1/models", headers={"host": "localhost"}).status_code == 400
    with make_client(FakeEngine(), host="0.0.0.0") as c:
        wait_ready(c)
        assert c.get("/v1/models", headers={"host": "anything.example"}).status_code == 200


def test_cors_is_off_by_default_and_on_for_listed_origins():
    origin = {"origin": "https://app.example", "access-control-request-method": "POST"}
    with make_client(FakeEngine()) as c:
        wait_ready(c)
        r = c.get("/v1/models", headers={"origin": "https://app.example"})
        assert "access-control-allow-origin" not in r.headers
        assert c.options(CHAT, headers=origin).status_code == 405
    with make_client(FakeEngine(), cors_origins=("https://app.example",)) as c:
        wait_ready(c)
        pre = c.options(CHAT, headers={**origin, "access-control-request-headers": "authorization"})
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "https://app.example"
        r = c.get("/v1/models", headers={"origin": "https://app.example"})
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        other = c.get("/v1/models", headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_docs_are_off_by_default_and_openapi_is_served():
    with make_client(FakeEngine()) as c:
        wait_ready(c)
        assert c.get("/docs").status_code == 404
        assert c.get("/redoc").status_code == 404
        assert c.get("/openapi.json").status_code == 200
    with make_client(FakeEngine(), docs=True) as c:
        wait_ready(c)
        assert c.get("/docs").status_code == 200


def test_probes_answer_any_host_name():
    with make_client(FakeEngine()) as c:
        wait_ready(c)
        assert c.get("/ready", headers={"host": "10.1.2.3:8000"}).status_code == 200
        assert c.get("/health", headers={"host": "10.1.2.3:8000"}).status_code == 200
