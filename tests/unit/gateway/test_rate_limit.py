"""Rate limits: token buckets, 429 with Retry-After, OpenAI's headers, tpm correction."""

from __future__ import annotations

import asyncio

import pytest

from tests.unit.gateway.conftest import chat, gateway_client
from tests.unit.server.fake_engine import FakeEngine
from tokenmill.gateway.buckets import MemoryBuckets


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_refills_at_its_capacity_per_minute():
    clock = Clock()
    buckets = MemoryBuckets(clock)

    async def scenario():
        for _ in range(3):
            assert (await buckets.take("k", 1, 3)).allowed
        refused = await buckets.take("k", 1, 3)
        assert not refused.allowed and refused.retry_after_s == pytest.approx(20.0)
        clock.now = 20.0  # a third of a minute: one request back
        assert (await buckets.take("k", 1, 3)).allowed
        assert not (await buckets.take("k", 1, 3)).allowed
        clock.now = 1000.0  # full again, never above capacity
        took = await buckets.take("k", 1, 3)
        assert took.remaining == pytest.approx(2.0)
        # A correction may drive the level negative: over-use is paid back by waiting.
        assert await buckets.adjust("k", -5, 3) == pytest.approx(-3.0)
        assert (await buckets.take("k", 1, 3)).retry_after_s == pytest.approx(80.0)

    asyncio.run(scenario())


@pytest.fixture
def keys_file(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text(
        '[keys.a]\nkey = "ka"\nrpm = 2\n[keys.b]\nkey = "kb"\ntpm = 100\n[keys.c]\nkey = "kc"\n'
    )
    return str(path)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_rpm_over_the_limit_is_429_with_retry_after_and_headers(keys_file):
    with gateway_client(FakeEngine(), keys=keys_file) as c:
        first = c.post("/v1/chat/completions", json=chat(), headers=auth("ka"))
        assert first.status_code == 200
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        assert c.post("/v1/chat/completions", json=chat(), headers=auth("ka")).status_code == 200
        third = c.post("/v1/chat/completions", json=chat(), headers=auth("ka"))
        assert third.status_code == 429
        err = third.json()["error"]
        assert err["code"] == "rate_limit_exceeded" and "'a'" in err["message"]
        assert 1 <= int(third.headers["retry-after"]) <= 30
        assert third.headers["x-ratelimit-remaining-requests"] == "0"
        # Another key has its own budget; a key without limits gets no headers.
        other = c.post("/v1/chat/completions", json=chat(), headers=auth("kc"))
        assert other.status_code == 200 and "x-ratelimit-limit-requests" not in other.headers


def test_tpm_reserves_prompt_plus_max_tokens_then_corrects_to_usage(keys_file):
    engine = FakeEngine(script="ab")  # two tokens then EOS: 3 completion tokens
    with gateway_client(engine, keys=keys_file) as c:
        r = c.post("/v1/completions", json={"prompt": "xyz", "max_tokens": 40}, headers=auth("kb"))
        assert r.status_code == 200
        usage = r.json()["usage"]
        reserved = 4 + 40  # BOS + 3 bytes, and max_tokens
        assert int(r.headers["x-ratelimit-remaining-tokens"]) == 100 - reserved
        # The next call sees the correction: only the used tokens stay taken.
        r2 = c.post("/v1/completions", json={"prompt": "xyz", "max_tokens": 40}, headers=auth("kb"))
        remaining = int(r2.headers["x-ratelimit-remaining-tokens"])
        assert (
            100 - usage["total_tokens"] - reserved
            <= remaining
            <= 100 - usage["total_tokens"] - reserved + 2
        )  # a little refill in between
        too_big = c.post(
            "/v1/completions", json={"prompt": "xyz", "max_tokens": 120}, headers=auth("kb")
        )
        assert too_big.status_code == 400
        assert too_big.json()["error"]["code"] == "request_too_large"


def test_a_refused_call_gives_its_tokens_back(keys_file):
    engine = FakeEngine(queue_full=True)
    with gateway_client(engine, keys=keys_file) as c:
        for _ in range(3):
            r = c.post(
                "/v1/completions", json={"prompt": "xyz", "max_tokens": 40}, headers=auth("kb")
            )
            assert r.status_code == 429 and r.json()["error"]["code"] == "queue_full"
        engine.queue_full = False
        r = c.post("/v1/completions", json={"prompt": "xyz", "max_tokens": 40}, headers=auth("kb"))
        assert r.status_code == 200  # 3 x 44 would exceed 100 had they not been refunded
