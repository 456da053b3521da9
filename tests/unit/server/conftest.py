"""Fixtures: the app over a FakeEngine, driven in-process."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.unit.server.fake_engine import FakeEngine
from tokenmill.config import ServerConfig
from tokenmill.server.app import build_app

LOCAL = "http://127.0.0.1"
"""Base URL of in-process clients: a loopback server answers loopback names only."""


def make_client(engine: FakeEngine, **config) -> TestClient:
    """A TestClient (lifespan not yet entered) over an app serving `engine`."""
    config.setdefault("max_body_mib", 64 / 1024)
    return TestClient(build_app(ServerConfig(**config), lambda: engine), base_url=LOCAL)


def wait_ready(client: TestClient, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while client.get("/ready").status_code != 200:
        assert time.monotonic() < deadline, "the app never became ready"
        time.sleep(0.01)


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def client(engine: FakeEngine) -> Iterator[TestClient]:
    with make_client(engine) as c:
        wait_ready(c)
        yield c
