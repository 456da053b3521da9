"""What the deploy tests check files against: what `tokenmill serve` really exposes (its
declared settings and its app's routes), never a copied list."""

from __future__ import annotations

import pytest

from tokenmill.config import AppConfig
from tokenmill.config.setting import settings_of
from tokenmill.server.app import build_app


@pytest.fixture(scope="session")
def settings_by_env() -> dict:
    """TOKENMILL_* name -> the declared Setting, as `tokenmill serve` reads them."""
    return {s.env: s for s in settings_of(AppConfig)}


@pytest.fixture(scope="session")
def serve_flags() -> set[str]:
    return {s.flag for s in settings_of(AppConfig)}


@pytest.fixture(scope="session")
def get_routes() -> set[str]:
    """The GET paths of the app `tokenmill serve` builds (the engine is never loaded:
    routes exist before the lifespan starts)."""
    from tokenmill.cli.serve import build_observability

    config = AppConfig()
    observability, _ = build_observability(config)  # /metrics, as `tokenmill serve` adds it
    app = build_app(config.server, lambda: None, observability=observability)
    return {r.path for r in app.routes if "GET" in (getattr(r, "methods", None) or ())}
