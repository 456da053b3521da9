"""Servers that `bench compare` starts: tokenmill and llama.cpp's llama-server.

Each runs as a subprocess on 127.0.0.1 on a free port, with its output in a log file,
and is stopped (SIGTERM, then SIGKILL) when the comparison leaves it. Anything that keeps
a peer from running raises PeerUnavailable with a message the report can show as is.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from typing_extensions import Self

HOST = "127.0.0.1"
READY_PATHS = ("/ready", "/health")
"""Probed in order: the first that exists decides (tokenmill's /health is live, not ready)."""
POLL_S = 0.5
STOP_GRACE_S = 15.0
LOG_TAIL_CHARS = 1500
LLAMA_CPP_VERSION = "0.3.36"
BUILD_SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "build_llama_server.sh"


class PeerUnavailable(RuntimeError):
    """A peer could not be built or started; the message says why and what to do."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server and know it is ready."""

    name: str
    argv: list[str]
    port: int
    startup_timeout_s: float = 300.0

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://{HOST}:{self.port}"


class ServerProcess:
    """A started server; use as a context manager, which waits until it is ready on entry
    and stops it on exit."""

    def __init__(self, spec: ServerSpec, log_dir: Path) -> None:
        self.spec = spec
        self.log_path = log_dir / f"{spec.name}.log"
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> Self:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        try:
            self._proc = subprocess.Popen(
                self.spec.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            raise PeerUnavailable(f"{self.spec.name} did not start: {exc}") from exc
        finally:
            log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.spec.startup_timeout_s
        paths = list(READY_PATHS)
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise PeerUnavailable(
                    f"{self.spec.name} exited with status {self._proc.returncode} while "
                    f"starting; log {self.log_path}:\n{self.log_tail()}"
                )
            for path in list(paths):
                try:
                    status = httpx.get(self.spec.url + path, timeout=5).status_code
                except httpx.HTTPError:
                    break
                if status == 200:
                    return
                if status != 404:
                    break
                paths.remove(path)
            time.sleep(POLL_S)
        raise PeerUnavailable(
            f"{self.spec.name} was not ready within {self.spec.startup_timeout_s:g} s; "
            f"log {self.log_path}:\n{self.log_tail()}"
        )

    def log_tail(self) -> str:
        """The end of the server's log, for error messages."""
        try:
            return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop the server and its process group: SIGTERM, then SIGKILL after a grace period."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def ensure_llama_server(version: str = LLAMA_CPP_VERSION, log_dir: Path | None = None) -> Path:
    """The llama-server binary, built by scripts/build_llama_server.sh on first use (into
    ~/.cache/tokenmill, outside the repository) and reused afterwards."""
    if not BUILD_SCRIPT.is_file():
        raise PeerUnavailable(
            f"{BUILD_SCRIPT} is missing (not a source checkout); pass --llama-server PATH."
        )
    log = (log_dir or Path.cwd()) / "llama-build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"llama-server: building or reusing llama.cpp {version} (log {log}) ...", flush=True)
    with log.open("wb") as f:
        done = subprocess.run(
            ["bash", str(BUILD_SCRIPT), version],
            stdout=subprocess.PIPE,
            stderr=f,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    if done.returncode != 0 or not lines or not Path(lines[-1]).is_file():
        tail = log.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        raise PeerUnavailable(f"llama-server could not be built (log {log}):\n{tail}")
    return Path(lines[-1])


def llama_server_spec(
    binary: Path,
    gguf: Path,
    parallel: int,
    ctx_per_slot: int,
    threads: int = 2,
    startup_timeout_s: float = 300.0,
) -> ServerSpec:
    """llama-server on the GGUF with continuous batching, `parallel` slots of
    `ctx_per_slot` tokens each, and `threads` threads for both decode and prompt batches."""
    port = free_port()
    argv = [
        str(binary),
        "-m",
        str(gguf),
        "--host",
        HOST,
        "--port",
        str(port),
        "-t",
        str(threads),
        "-tb",
        str(threads),
        "--parallel",
        str(parallel),
        "-c",
        str(parallel * ctx_per_slot),
        "--cont-batching",
        "--no-webui",
    ]
    return ServerSpec("llama-server", argv, port, startup_timeout_s)


def tokenmill_spec(
    extra_args: list[str] | None = None, startup_timeout_s: float = 300.0
) -> ServerSpec:
    """`tokenmill serve` from this environment on a free port."""
    port = free_port()
    exe = Path(sys.executable).with_name("tokenmill")
    head = [str(exe)] if exe.is_file() else [sys.executable, "-m", "tokenmill.cli.main"]
    argv = [*head, "serve", "--host", HOST, "--port", str(port), *(extra_args or [])]
    return ServerSpec("tokenmill", argv, port, startup_timeout_s)
