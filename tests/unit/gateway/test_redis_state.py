"""Rate-limit buckets and the response cache in a real Redis: same semantics as memory,
shared by every client that points at it."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import redis.asyncio as aioredis

from tests.services.redis import redis_url  # noqa: F401 - the fixture
from tests.unit.gateway.conftest import chat, gateway_client
from tests.unit.server.fake_engine import FakeEngine
from tokenmill.gateway.buckets import RedisBuckets
from tokenmill.gateway.cache_store import CacheLimits, RedisCacheStore


def run(coro_fn, url: str):
    async def main():
        client = aioredis.from_url(url)
        await client.flushdb()
        try:
            return await coro_fn(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_redis_buckets_are_shared_between_clients(redis_url):  # noqa: F811
    async def scenario(client):
        other = aioredis.from_url(redis_url)
        a, b = RedisBuckets(client), RedisBuckets(other)
        assert (await a.take("k", 2, 3)).allowed
        took = await b.take("k", 2, 3)  # the other process sees the same bucket
        assert not took.allowed and took.retry_after_s == pytest.approx(20.0, abs=0.5)
        assert (await b.take("k", 1, 3)).allowed
        level = await a.adjust("k", -2, 3)
        assert level == pytest.approx(-2.0, abs=0.1)
        await other.aclose()

    run(scenario, redis_url)


def test_redis_cache_store_bounds_and_vectors(redis_url):  # noqa: F811
    async def scenario(client):
        store = RedisCacheStore(client, CacheLimits(max_entries=3, max_bytes=100, ttl_s=60))
        v = np.ones(4, dtype=np.float32) / 2
        for k in "abc":
            await store.put(k, b"x" * 10, bucket="B", vector=v)
            await asyncio.sleep(0.01)
        assert await store.get("a") == b"x" * 10  # touch a
        await store.put("d", b"x" * 10, bucket="B", vector=v)
        assert await store.get("b") is None  # least recently used went first
        keys, matrix = await store.vectors("B")
        assert sorted(keys) == ["a", "c", "d"] and matrix.shape == (3, 4)
        await store.put("e", b"y" * 95)
        assert int(await client.get("tokenmill:cache:bytes")) <= 100
        assert await store.get("e") == b"y" * 95
        short = RedisCacheStore(client, CacheLimits(10, 1000, ttl_s=0.05), prefix="t:")
        await short.put("gone", b"v")
        await asyncio.sleep(0.2)
        assert await short.get("gone") is None

    run(scenario, redis_url)


def test_two_apps_share_limits_and_cache_through_redis(tmp_path, redis_url):  # noqa: F811
    keys = tmp_path / "keys.toml"
    keys.write_text('[keys.a]\nkey = "ka"\nrpm = 3\n')
    asyncio.run(_flush(redis_url))
    headers = {"Authorization": "Bearer ka"}
    engines = [FakeEngine(), FakeEngine()]
    client_a = aioredis.from_url(redis_url)
    client_b = aioredis.from_url(redis_url)
    with (
        gateway_client(engines[0], redis=client_a, keys=str(keys)) as one,
        gateway_client(engines[1], redis=client_b, keys=str(keys)) as two,
    ):
        codes = [
            c.post("/v1/chat/completions", json=chat(temperature=0), headers=headers)
            for c in (one, two, one, two)
        ]
        assert [r.status_code for r in codes] == [200, 200, 200, 429]
        assert codes[0].headers["x-tokenmill-cache"] == "miss"
        assert codes[1].headers["x-tokenmill-cache"] == "hit"  # cached by the other app
        assert len(engines[0].calls) == 1 and len(engines[1].calls) == 0


async def _flush(url: str) -> None:
    client = aioredis.from_url(url)
    await client.flushdb()
    await client.aclose()
