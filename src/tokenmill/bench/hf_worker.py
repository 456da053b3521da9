"""The transformers baseline in its own process, pinned like a server.

Running the baseline inside the load generator would put it on the client's core; as a
worker process it gets the plan's CPUs and threads, and its memory is measured like a
server's. The protocol is one JSON object a line:

- worker -> parent, once loaded: {"ready": true}
- parent -> worker: {"batch_size": B, "requests": [BenchRequest dicts]}
- worker -> parent: {"duration_s": s, "results": [RequestResult dicts]}

Run as `python -m tokenmill.bench.hf_worker THREADS DTYPE`.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from tokenmill.bench.metrics import RequestResult
from tokenmill.bench.peers import LOG_TAIL_CHARS, PeerUnavailable, describe_exit
from tokenmill.bench.pinning import pinned_argv
from tokenmill.bench.workload import BenchRequest

if TYPE_CHECKING:
    from typing_extensions import Self

STOP_GRACE_S = 15.0


def main(argv: list[str] | None = None) -> int:
    """Load the model, say ready, then answer level requests until stdin closes."""
    from tokenmill.bench.hf_baseline import HFStaticBatcher

    threads, dtype = (sys.argv[1:] if argv is None else argv)[:2]
    batcher = HFStaticBatcher(threads=int(threads), dtype=dtype)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        msg = json.loads(line)
        requests = [BenchRequest(**r) for r in msg["requests"]]
        results, duration = batcher.run_requests(requests, int(msg["batch_size"]))
        reply = {"duration_s": duration, "results": [asdict(r) for r in results]}
        print(json.dumps(reply), flush=True)
    return 0


class HFWorker:
    """The parent's handle on a worker: a context manager that starts it pinned to `cpus`
    and waits for it to load, and stops it on exit."""

    def __init__(
        self,
        threads: int,
        dtype: str,
        cpus: tuple[int, ...] | None,
        log_dir: Path,
        startup_timeout_s: float = 300.0,
    ) -> None:
        self.threads, self.dtype, self.cpus = threads, dtype, cpus
        self.startup_timeout_s = startup_timeout_s
        self.log_path = log_dir / "transformers.log"
        self.argv = [sys.executable, "-m", "tokenmill.bench.hf_worker", str(threads), dtype]
        self._proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        """The worker's process id."""
        assert self._proc is not None, "not started"
        return self._proc.pid

    def poll(self) -> int | None:
        """The exit status if the worker has exited."""
        return None if self._proc is None else self._proc.poll()

    def __enter__(self) -> Self:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        preexec = None
        if self.cpus is not None:
            self.argv, preexec = pinned_argv(self.argv, self.cpus)
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads)}
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
                start_new_session=True,
                preexec_fn=preexec,  # noqa: PLW1509 - only sets the child's CPU affinity
            )
        try:
            self._read(self.startup_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def run(self, requests: list[BenchRequest], batch_size: int, timeout_s: float):
        """Run one level; returns (results, duration_s). Raises PeerUnavailable if the
        worker dies or does not answer within `timeout_s`."""
        assert self._proc is not None and self._proc.stdin is not None
        msg = {"batch_size": batch_size, "requests": [r.to_dict() for r in requests]}
        try:
            self._proc.stdin.write(json.dumps(msg) + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            pass  # _read reports the exit status
        reply = self._read(timeout_s)
        return [RequestResult(**r) for r in reply["results"]], float(reply["duration_s"])

    def _read(self, timeout_s: float) -> dict:
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PeerUnavailable(f"transformers worker silent for {timeout_s:g} s")
            ready, _, _ = select.select([self._proc.stdout], [], [], min(left, 1.0))
            if ready:
                line = self._proc.stdout.readline()
                if line.strip():
                    return json.loads(line)
            code = self._proc.poll()
            if code is not None:
                tail = self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
                raise PeerUnavailable(
                    f"transformers worker exited with {describe_exit(code)}; "
                    f"log {self.log_path}:\n{tail}",
                    returncode=code,
                )

    def stop(self) -> None:
        """Close its input (it exits when stdin ends), then kill it if it lingers."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    sys.exit(main())
