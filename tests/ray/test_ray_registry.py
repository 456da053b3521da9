"""`tokenmill serve --ray --models FILE` with autoscaling: every replica serves the whole
models file (versions with their traffic split), the admin API refuses changes that
would reach one replica, and Serve adds a replica under load."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tests.ray.conftest import running_replicas, stop, wait_running
from tokenmill.ray.app import REGISTRY_DEPLOYMENT

MODELS = """\
[[models]]
name = "smollm2"
version = "1"
traffic = 70

[[models]]
name = "smollm2"
version = "2"
quantization = "int8"
traffic = 30
"""
SCALE_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def registry_ray_server(tmp_path_factory, ray_address) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("ray-registry")
    models = folder / "models.toml"
    models.write_text(MODELS)
    srv = ServerProcess(
        folder / "serve.log",
        "--ray",
        "--ray-address",
        ray_address,
        "--models",
        str(models),
        "--min-replicas",
        "1",
        "--max-replicas",
        "2",
        "--target-ongoing-requests",
        "1",
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
        # No keys: the version split is sticky on `user` (with keys it is on the key).
        "--admin-open",
    )
    try:
        wait_running(srv, 1, deployment=REGISTRY_DEPLOYMENT)
        yield srv
    finally:
        code = stop(srv)
        assert code == 0, f"tokenmill serve --ray exited with {code}:\n{srv.log()[-4000:]}"
    assert not (folder / "models.toml.state.json").exists(), "a replica wrote the state file"


def complete(srv: ServerProcess, user: str, max_tokens: int = 4, **extra) -> httpx.Response:
    # A prompt of its own per call: a shared one would be a response-cache hit, and its
    # shared prefix would pin every call to one replica (prefix affinity).
    return srv.http.post(
        "/v1/completions",
        json={
            "model": "smollm2",
            "prompt": f"Call {user}. The mill by the river",
            "max_tokens": max_tokens,
            "temperature": 0,
            "user": user,
            **extra,
        },
        timeout=300,
    )


def test_every_version_of_the_models_file_is_served_through_ray(registry_ray_server):
    srv = registry_ray_server
    ids = sorted(m["id"] for m in srv.http.get("/v1/models").json()["data"])
    assert ids == ["smollm2", "smollm2@1", "smollm2@2"], ids
    replies = [complete(srv, f"user-{i}") for i in range(20)]
    assert [r.status_code for r in replies] == [200] * 20, replies[0].text
    served = Counter(r.json()["model"] for r in replies)
    assert set(served) == {"smollm2@1", "smollm2@2"}, served
    # A change through one replica would leave the others on the old registry: refused.
    r = srv.http.patch("/admin/models/smollm2@2", json={"traffic": 100})
    assert r.status_code == 409 and r.json()["error"]["code"] == "registry_frozen", r.text
    assert "models file" in r.json()["error"]["message"]


def test_autoscaling_adds_a_replica_under_load(registry_ray_server):
    srv = registry_ray_server
    assert running_replicas(REGISTRY_DEPLOYMENT) == 1
    stop_load = threading.Event()
    statuses: list[int] = []
    replicas: Counter = Counter()

    def client(n: int) -> None:
        i = 0
        while not stop_load.is_set():
            i += 1
            r = complete(srv, f"load-{n}-{i}", max_tokens=96, ignore_eos=True)
            statuses.append(r.status_code)
            replicas[r.headers.get("x-tokenmill-replica")] += 1

    # Four requests in progress against a target of one per replica: Serve wants four
    # replicas and gets its maximum, two.
    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + SCALE_TIMEOUT_S
        while running_replicas(REGISTRY_DEPLOYMENT) < 2:
            assert time.monotonic() < deadline, f"no second replica after {SCALE_TIMEOUT_S} s"
            time.sleep(2)
        # Load keeps flowing until the new replica has answered some of it.
        deadline = time.monotonic() + 120
        while len(replicas) < 2 and time.monotonic() < deadline:
            time.sleep(1)
    finally:
        stop_load.set()
        for t in threads:
            t.join(300)
    assert statuses and set(statuses) == {200}, Counter(statuses)
    assert len(replicas) == 2, f"the added replica took no load: {replicas}"
