"""Server processes that `bench compare` starts: tokenmill, llama-server, the HF worker.

Each runs as a subprocess on 127.0.0.1 on a free port, pinned to its plan's CPUs, with
its output in a log file, and is stopped (SIGTERM, then SIGKILL) when the comparison
leaves it. Anything that keeps a peer from running raises PeerUnavailable with a message
the report can show as is, exit status included.
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

from tokenmill.bench.pinning import pinned_argv

if TYPE_CHECKING:
    from typing_extensions import Self

HOST = "127.0.0.1"
READY_PATHS = ("/ready", "/health")
"""Probed in order: the first that exists decides (tokenmill's /health is live, not ready)."""
POLL_S = 0.5
STOP_GRACE_S = 15.0
LOG_TAIL_CHARS = 1500


class PeerUnavailable(RuntimeError):
    """A peer could not be built or started; the message says why and what to do.
    `returncode` is the process's exit status when it exited (negative: killed by that
    signal), else None."""

    def __init__(self, message: str, returncode: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode


def describe_exit(returncode: int) -> str:
    """ "status 3", or "signal 11 (SIGSEGV)" for a process a signal killed."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown"
        return f"signal {-returncode} ({name})"
    return f"status {returncode}"


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
    cpus: tuple[int, ...] | None = None
    """CPUs the process and all its threads are restricted to; None: unrestricted."""
    env: dict[str, str] | None = None
    """Variables added to this process's environment."""

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://{HOST}:{self.port}"


class ServerProcess:
    """A started server; use as a context manager, which waits until it is ready on entry
    and stops it on exit."""

    def __init__(self, spec: ServerSpec, log_dir: Path) -> None:
        self.spec = spec
        self.log_path = log_dir / f"{spec.name.replace(' ', '-')}.log"
        self._proc: subprocess.Popen | None = None
        self.argv = list(spec.argv)
        """The command actually run (with its `taskset` prefix when pinned)."""

    @property
    def pid(self) -> int:
        """The server's process id (it leads its own process group)."""
        assert self._proc is not None, "not started"
        return self._proc.pid

    def __enter__(self) -> Self:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        preexec = None
        if self.spec.cpus is not None:
            self.argv, preexec = pinned_argv(self.spec.argv, self.spec.cpus)
        env = {**os.environ, **(self.spec.env or {})}
        log = self.log_path.open("wb")
        try:
            self._proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
                preexec_fn=preexec,  # noqa: PLW1509 - only sets the child's CPU affinity
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
            code = self._proc.poll()
            if code is not None:
                raise PeerUnavailable(
                    f"{self.spec.name} exited with {describe_exit(code)} while starting; "
                    f"log {self.log_path}:\n{self.log_tail()}",
                    returncode=code,
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

    def poll(self) -> int | None:
        """The exit status if the server has exited (negative: killed by that signal)."""
        return None if self._proc is None else self._proc.poll()

    def log_tail(self) -> str:
        """The end of the server's log, for error messages, without the lines our own
        readiness polls left (they would crowd out why the server did not come up)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        kept = [x for x in lines if not any(f'"GET {p} ' in x for p in READY_PATHS)]
        return "\n".join(kept)[-LOG_TAIL_CHARS:]

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


def tokenmill_spec(
    name: str,
    extra_args: list[str],
    threads: int,
    cpus: tuple[int, ...] | None = None,
    startup_timeout_s: float = 300.0,
) -> ServerSpec:
    """`tokenmill serve` from this environment on a free port, with `threads` compute
    threads (its default, all CPUs but one, would give it one fewer than its peers)."""
    port = free_port()
    exe = Path(sys.executable).with_name("tokenmill")
    head = [str(exe)] if exe.is_file() else [sys.executable, "-m", "tokenmill.cli.main"]
    argv = [*head, "serve", "--host", HOST, "--port", str(port), "--num-threads", str(threads)]
    env = {"OMP_NUM_THREADS": str(threads)}
    return ServerSpec(name, [*argv, *extra_args], port, startup_timeout_s, cpus, env)
