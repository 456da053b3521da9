"""`tokenmill serve` as a real subprocess on a free loopback port, with the default model."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

READY_TIMEOUT_S = 240


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tokenmill_command() -> list[str]:
    script = Path(sys.executable).parent / "tokenmill"
    return [str(script)] if script.exists() else [sys.executable, "-m", "tokenmill.cli.main"]


class ServerProcess:
    """A running `tokenmill serve`; its output goes to `log_path`."""

    def __init__(self, log_path: Path, *flags: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENMILL_")}
        self.proc = subprocess.Popen(
            [*tokenmill_command(), "serve", "--port", str(self.port), *flags],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"tokenmill serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.http.get("/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        pytest.fail(f"tokenmill serve not ready after {READY_TIMEOUT_S} s:\n{self.log()}")

    def client(self, **kwargs) -> openai.OpenAI:
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 60)
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="unused", **kwargs)

    def stats(self) -> dict:
        return self.http.get("/v1/engine/stats").json()

    def log(self) -> str:
        """The log's last 6000 characters, for failure messages."""
        return self.full_log()[-6000:]

    def full_log(self) -> str:
        """The whole log, for tests that look for a line in it (per-request lines can
        push the startup line out of any fixed tail)."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.http.close()
        self._log.close()
        return self.proc.returncode


def start_server(tmp_path_factory: pytest.TempPathFactory, name: str, *flags: str):
    log_path = tmp_path_factory.mktemp(name) / "serve.log"
    server = ServerProcess(log_path, *flags)
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The shared server: default model, small body limit, generous timeout."""
    srv = start_server(
        tmp_path_factory,
        "main",
        "--max-body-mib",
        "1",
        "--request-timeout",
        "120",
        "--max-num-seqs",
        "8",
    )
    yield srv
    code = srv.stop()
    assert code == 0, f"server exited with {code}:\n{srv.log()}"


@pytest.fixture(scope="session")
def model_name(server: ServerProcess) -> str:
    return server.http.get("/v1/models").json()["data"][0]["id"]
