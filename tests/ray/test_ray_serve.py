"""`tokenmill serve --ray` with 2 replicas: load spread, prefix affinity, Redis-shared
limits and cache, and a replica killed mid-load."""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import ray
from ray import serve

from tests.ray.conftest import (
    ADMIN_KEY,
    APP,
    LIMITED_KEY,
    LIMITED_RPM,
    MODEL_DEPLOYMENT,
    replica_actor_names,
    wait_running,
)
from tokenmill.ray.forwarding import ForwardedRequest

REPLICA = "x-tokenmill-replica"


def complete(srv, prompt: str, max_tokens: int = 8, key: str = ADMIN_KEY, **extra):
    return httpx.post(
        f"{srv.url}/v1/completions",
        json={"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, **extra},
        headers={"authorization": f"Bearer {key}"},
        timeout=300,
    )


def test_two_replicas_serve_concurrent_clients_and_both_take_load(ray_server):
    prompts = [f"Client {i} asks: what is {i} plus {i + 3}? Answer:" for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda p: complete(ray_server, p), prompts))
    assert [r.status_code for r in replies] == [200] * len(prompts), replies[0].text
    assert all(r.json()["usage"]["completion_tokens"] > 0 for r in replies)
    load = Counter(r.headers[REPLICA] for r in replies)
    assert len(load) == 2, f"one replica took every request: {load}"
    assert min(load.values()) >= 3, f"load is lopsided: {load}"


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def test_shared_prefix_requests_land_on_one_replica(ray_server):
    groups = 4
    per_group = 6
    same, cached = 0, []
    for g in range(groups):
        document = " ".join(
            f"Section {g}.{j}: the quarterly ledger shows item {j * 7 + g}." for j in range(12)
        )  # ~600 characters shared by the group
        first = None
        for q in range(per_group):
            reply = complete(ray_server, f"{document}\nQuestion {q}: which item is largest?")
            assert reply.status_code == 200, reply.text
            replica = reply.headers[REPLICA]
            if first is None:
                first = replica
            else:
                same += replica == first
                details = reply.json()["usage"].get("prompt_tokens_details") or {}
                cached.append(details.get("cached_tokens") or 0)
    trials = groups * (per_group - 1)
    # With 2 replicas and no affinity, each later request meets the group's first
    # replica with probability about 1/2.
    p_value = binomial_tail(same, trials, 0.5)
    assert p_value < 0.001, f"{same}/{trials} on the prefix's replica (p={p_value:.3g})"
    # Landing there pays: the replica's prefix cache serves the shared prompt's blocks.
    assert sum(c > 0 for c in cached) >= same * 0.8, cached


def test_rate_limit_is_shared_across_replicas_through_redis(ray_server):
    prompts = [f"Rate limit probe {i}: name a colour." for i in range(2 * LIMITED_RPM)]
    started = time.monotonic()
    with ThreadPoolExecutor(len(prompts)) as pool:  # all reach the limiter at once
        replies = list(pool.map(lambda p: complete(ray_server, p, key=LIMITED_KEY), prompts))
    elapsed = time.monotonic() - started
    codes = Counter(r.status_code for r in replies)
    replicas = {r.headers[REPLICA] for r in replies}
    assert len(replicas) == 2, f"every request went to one replica: {replicas}"
    # Each replica alone would allow LIMITED_RPM (8 answers for a 4/4 split, 6 for 6/2);
    # the shared bucket allows that in total, plus what it refilled meanwhile.
    refill = math.ceil(elapsed * LIMITED_RPM / 60)
    assert LIMITED_RPM <= codes[200] <= LIMITED_RPM + refill < len(prompts) - 2, (codes, elapsed)
    assert codes[200] + codes[429] == len(prompts), codes
    limited = next(r for r in replies if r.status_code == 429)
    assert limited.json()["error"]["type"], limited.text


def test_response_cache_is_shared_across_replicas_through_redis(ray_server):
    prompt = "Cache probe: the capital of France is"
    first = complete(ray_server, prompt)
    assert first.status_code == 200 and first.headers.get("x-tokenmill-cache") == "miss"
    owner = first.headers[REPLICA]
    # This process's own handle has an empty prefix table, so it routes by load alone:
    # send the same request until the other replica answers it.
    handle = serve.get_deployment_handle(MODEL_DEPLOYMENT, app_name=APP)
    body = json.dumps({"prompt": prompt, "max_tokens": 8, "temperature": 0}).encode()
    request = ForwardedRequest(
        "POST",
        "/v1/completions",
        "",
        (
            ("content-type", "application/json"),
            ("authorization", f"Bearer {ADMIN_KEY}"),
            ("host", "127.0.0.1"),
        ),
        body,
    )
    other = None
    for _ in range(40):
        reply = handle.handle.remote(request).result(timeout_s=120)
        if reply.head.replica != owner:
            other = reply
            break
    assert other is not None, "the handle never reached the second replica"
    headers = dict(other.head.headers)
    assert other.head.status == 200, other.body
    assert headers.get("x-tokenmill-cache") == "hit", headers
    assert json.loads(other.body)["choices"] == first.json()["choices"]


def test_killed_replica_is_replaced_and_only_its_requests_fail(ray_server):
    shared = "Story time. " + " ".join(f"Chapter {i} begins in the old mill." for i in range(20))
    results: dict[str, object] = {}
    stream_replica: dict[int, str] = {}

    def whole(i: int) -> None:
        results[f"whole-{i}"] = complete(
            ray_server, f"{shared} Part {i}:", max_tokens=256, ignore_eos=True
        )

    def stream(i: int, prompt: str, started: threading.Event) -> None:
        events, replica, error = [], None, None
        with httpx.stream(
            "POST",
            f"{ray_server.url}/v1/completions",
            json={
                "prompt": prompt,
                "max_tokens": 256,
                "ignore_eos": True,
                "temperature": 0,
                "stream": True,
            },
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
            timeout=300,
        ) as response:
            replica = response.headers.get(REPLICA)
            stream_replica[i] = replica
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                started.set()
                data = line[len("data: ") :]
                if data == "[DONE]":
                    events.append(data)
                    continue
                payload = json.loads(data)
                if "error" in payload:
                    error = payload["error"]
                events.append(payload)
        results[f"stream-{i}"] = (response.status_code, replica, events, error)

    before = set(replica_actor_names())
    assert len(before) == 2
    threads = [threading.Thread(target=whole, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # the whole requests are routed first: they own the shared prefix
    started = [threading.Event(), threading.Event()]
    streams = [
        threading.Thread(target=stream, args=(0, f"{shared} Epilogue:", started[0])),
        threading.Thread(target=stream, args=(1, "Unrelated: list some rivers.", started[1])),
    ]
    for t in streams:
        t.start()
    assert started[0].wait(120), "the stream never started"
    # The stream sharing the whole requests' prefix runs on their replica: kill it.
    victim = next(n for n in before if victim_short(n) == stream_replica[0])
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    for t in [*threads, *streams]:
        t.join(420)

    wholes = [results[f"whole-{i}"] for i in range(4)]
    assert [r.status_code for r in wholes] == [200] * 4, [r.text for r in wholes]
    retried = [r for r in wholes if r.headers.get("x-tokenmill-retries")]
    assert retried, "no request was in flight on the killed replica"
    assert all(victim_short(victim) != r.headers[REPLICA] for r in retried)

    status, replica, events, error = results["stream-0"]
    assert status == 200 and replica == victim_short(victim)
    assert error is not None and error["code"] == "replica_died", events[-3:]
    assert "died mid-response" in error["message"]
    assert "[DONE]" not in events
    _status1, replica1, events1, error1 = results["stream-1"]
    if replica1 != victim_short(victim):  # a stream on the other replica is untouched
        assert error1 is None and events1[-1] == "[DONE]"

    # Serve's status can count the killed replica as RUNNING for a moment after its actor
    # is gone (so wait_running alone returned with one replica actor left): wait for the
    # replacement actor itself, then for Serve to run it.
    deadline = time.monotonic() + 300
    after = set(replica_actor_names())
    while (victim in after or len(after) != 2) and time.monotonic() < deadline:
        time.sleep(1)
        after = set(replica_actor_names())
    assert victim not in after and len(after) == 2
    wait_running(ray_server, 2, timeout_s=max(1.0, deadline - time.monotonic()))
    assert complete(ray_server, "After the failure: hello").status_code == 200


def victim_short(actor_name: str) -> str:
    """The replica id in a replica actor's name (SERVE_REPLICA::app#deployment#id)."""
    return actor_name.rsplit("#", 1)[-1]


pytestmark = pytest.mark.timeout(600)
