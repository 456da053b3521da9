"""Real `tokenmill serve --ray` servers (one per test module: Serve runs one tokenmill
application at a time), joined to a Ray head this test session starts on loopback (and
shuts down), with a real redis-server for shared limits and cache.

The suite is separate from `make test` (`make test-ray`): it takes a few minutes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tests.services.redis import redis_url  # noqa: F401 - the session's redis-server

ray = pytest.importorskip("ray", reason="tests/ray need the ray extra: pip install '.[ray]'")
from ray import serve
from ray.serve import context as serve_context

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

APP = "tokenmill"
MODEL_DEPLOYMENT = "model-smollm2-135m-instruct"
LIMITED_KEY = "sk-limited-test"
ADMIN_KEY = "sk-admin-test"
LIMITED_RPM = 4
READY_TIMEOUT_S = 600


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    """A local Ray head owned by this test process (2 CPUs, no dashboard)."""
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def keys_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("keys") / "keys.toml"
    path.write_text(
        f'[keys.admin]\nkey = "{ADMIN_KEY}"\nadmin = true\n\n'
        f'[keys.limited]\nkey = "{LIMITED_KEY}"\nrpm = {LIMITED_RPM}\n'
    )
    return str(path)


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory, ray_address, redis_url, keys_file) -> Iterator[ServerProcess]:  # noqa: F811
    log = tmp_path_factory.mktemp("ray-serve") / "serve.log"
    srv = ServerProcess(
        log,
        "--ray",
        "--ray-address",
        ray_address,
        "--replicas",
        "2",
        "--ray-replica-cpus",
        "0.5",
        "--num-threads",
        "1",
        "--max-num-seqs",
        "8",
        "--kv-cache-memory-gib",
        "0.25",
        "--max-model-len",
        "2048",
        "--redis-url",
        redis_url,
        "--keys",
        keys_file,
    )
    srv.http.headers["authorization"] = f"Bearer {ADMIN_KEY}"
    try:
        wait_running(srv, 2)
        yield srv
    finally:
        code = stop(srv)
        assert code == 0, f"tokenmill serve --ray exited with {code}:\n{srv.log()[-4000:]}"


def running_replicas(name: str = MODEL_DEPLOYMENT) -> int:
    """RUNNING replicas of deployment `name`, per Serve's controller."""
    status = serve.status().applications.get(APP)
    deployment = status.deployments.get(name) if status is not None else None
    if deployment is None:
        return 0
    return deployment.replica_states.get("RUNNING", 0)


def replica_actor_names() -> list[str]:
    """Named Serve replica actors of the model deployment."""
    names = ray.util.list_named_actors(all_namespaces=True)
    return [
        n["name"]
        for n in names
        if n["name"].startswith("SERVE_REPLICA::") and MODEL_DEPLOYMENT in n["name"]
    ]


def wait_running(
    srv: ServerProcess,
    replicas: int,
    timeout_s: float = READY_TIMEOUT_S,
    deployment: str = MODEL_DEPLOYMENT,
) -> None:
    """Waits until Serve reports `deployment` healthy with `replicas` replicas and /ready
    answers 200 through the proxy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if srv.proc.poll() is not None:
            pytest.fail(f"tokenmill serve --ray exited with {srv.proc.returncode}:\n{srv.log()}")
        try:
            ready = srv.http.get("/ready").status_code == 200
            if running_replicas(deployment) == replicas and ready:
                return
        except (httpx.TransportError, ray.exceptions.RaySystemError):
            pass
        time.sleep(1)
    pytest.fail(f"{replicas} replicas not running after {timeout_s:.0f} s:\n{srv.log()[-4000:]}")


def stop(srv: ServerProcess, timeout_s: float = 120) -> int:
    """SIGTERM, then wait for Serve's shutdown (the replicas drain); kill past the wait."""
    if srv.proc.poll() is None:
        srv.proc.send_signal(signal.SIGTERM)
        try:
            srv.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            srv.proc.kill()
            srv.proc.wait()
    srv.http.close()
    srv._log.close()
    # The server's exit shut Serve down: forget this process's client of the dead
    # controller, so the next server's status calls reach its new one.
    serve_context._set_global_client(None)
    return srv.proc.returncode
