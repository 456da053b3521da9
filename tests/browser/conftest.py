"""A live server (uvicorn on a free port, over the fake engine) and headless Debian
Chromium driven by Playwright. Without /usr/bin/chromium these tests are skipped,
unless TOKENMILL_REQUIRE_BROWSER=1 (`make test-browser`, CI) makes that a failure."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import uvicorn

from tokenmill.cli.serve import build_observability, obs_tracer
from tokenmill.config import AppConfig
from tokenmill.config.setting import build
from tokenmill.gateway.assemble import build_pipeline
from tokenmill.gateway.auth import KeyStore
from tokenmill.server.app import build_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def pytest_collection_modifyitems(config, items):
    if os.path.exists(CHROMIUM):
        return
    if os.environ.get("TOKENMILL_REQUIRE_BROWSER") == "1":
        raise pytest.UsageError(f"{CHROMIUM} is missing: apt-get install -y chromium")
    skip = pytest.mark.skip(reason=f"{CHROMIUM} not installed (apt-get install -y chromium)")
    for item in items:
        item.add_marker(skip)


@contextmanager
def live_server(engine, **settings: Any) -> Iterator[str]:
    """The app `tokenmill serve` would build from `settings`, over `engine`, listening
    on 127.0.0.1; yields its base URL once /ready answers 200."""
    config = build(AppConfig, settings)
    observability, observers = build_observability(config)
    keys = KeyStore.from_settings(config.gateway.api_key, config.gateway.keys)
    app = build_app(
        config.server,
        lambda: engine,
        pipeline_factory=lambda e: build_pipeline(
            e, config, None, None, observers, obs_tracer(observability)
        ),
        keys=keys,
        observability=observability,
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/ready").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the live server did not become ready"
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@pytest.fixture
def browser_page():
    """A fresh headless Chromium page (its own profile directory)."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="tokenmill-chromium-")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1200, "height": 860},
        )
        try:
            yield context.new_page()
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)
