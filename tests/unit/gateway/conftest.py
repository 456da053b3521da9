"""Fixtures: the app over a FakeEngine with a gateway configured from settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient

from tests.unit.server.conftest import LOCAL, wait_ready
from tests.unit.server.fake_engine import FakeEngine
from tokenmill.cli.serve import build_observability, obs_tracer
from tokenmill.config import AppConfig
from tokenmill.config.setting import build
from tokenmill.gateway.assemble import build_pipeline
from tokenmill.gateway.auth import KeyStore
from tokenmill.server.app import build_app


@contextmanager
def gateway_client(
    engine: FakeEngine,
    redis=None,
    embedder=None,
    tracing=None,
    drift_embedder=None,
    **settings: Any,
) -> Iterator[TestClient]:
    """A ready TestClient whose pipeline the given settings (flag names) configure,
    with the observability `tokenmill serve` would build from them."""
    config = build(AppConfig, settings)
    observability, observers = build_observability(config, tracing, drift_embedder)
    keys = KeyStore.from_settings(config.gateway.api_key, config.gateway.keys)
    app = build_app(
        config.server,
        lambda: engine,
        pipeline_factory=lambda e: build_pipeline(
            e, config, redis, embedder, observers, obs_tracer(observability)
        ),
        keys=keys,
        observability=observability,
    )
    with TestClient(app, base_url=LOCAL) as client:
        wait_ready(client)
        yield client


def chat(text: str = "hi", **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "max_tokens": 5, **fields}
