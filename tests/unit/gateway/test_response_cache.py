"""The response cache: what is cacheable, hits and misses, streams, namespaces, bounds."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.unit.gateway.conftest import chat, gateway_client
from tests.unit.server.fake_engine import FakeEngine
from tests.unit.server.test_generation_api import sse_events
from tokenmill.gateway.cache_store import CacheLimits, MemoryCacheStore

GREEDY = {"temperature": 0}


def test_a_greedy_request_is_computed_once_then_served_from_the_cache():
    engine = FakeEngine()
    with gateway_client(engine) as c:
        first = c.post("/v1/chat/completions", json=chat(**GREEDY))
        second = c.post("/v1/chat/completions", json=chat(**GREEDY))
        assert first.headers["x-tokenmill-cache"] == "miss"
        assert second.headers["x-tokenmill-cache"] == "hit"
        assert second.headers["x-tokenmill-served-by"] == "cache"
        assert len(engine.calls) == 1
        a, b = first.json(), second.json()
        assert a["choices"] == b["choices"] and a["usage"] == b["usage"]
        assert a["id"] != b["id"]


def test_seeded_requests_are_cacheable_and_sampled_ones_are_not():
    engine = FakeEngine()
    with gateway_client(engine) as c:
        sampled = c.post("/v1/chat/completions", json=chat(temperature=0.8))
        assert "x-tokenmill-cache" not in sampled.headers
        c.post("/v1/chat/completions", json=chat(temperature=0.8))
        assert len(engine.calls) == 2
        seeded = [
            c.post("/v1/chat/completions", json=chat(temperature=0.8, seed=7)) for _ in range(2)
        ]
        assert [r.headers["x-tokenmill-cache"] for r in seeded] == ["miss", "hit"]
        other_seed = c.post("/v1/chat/completions", json=chat(temperature=0.8, seed=8))
        assert other_seed.headers["x-tokenmill-cache"] == "miss"


def test_every_sampling_field_and_the_prompt_are_in_the_key():
    with gateway_client(FakeEngine()) as c:
        c.post("/v1/chat/completions", json=chat(**GREEDY))
        for changed in (
            chat("other", **GREEDY),
            chat(max_tokens=6, **GREEDY),
            chat(stop=["x"], **GREEDY),
            chat(presence_penalty=0.5, **GREEDY),
            chat(logprobs=True, **GREEDY),
        ):
            r = c.post("/v1/chat/completions", json=changed)
            assert r.headers["x-tokenmill-cache"] == "miss", changed


def test_one_key_never_receives_another_keys_answer(tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text('[keys.a]\nkey = "ka"\n[keys.b]\nkey = "kb"\n')
    with gateway_client(FakeEngine(), keys=str(keys)) as c:
        for key, expected in (("ka", "miss"), ("kb", "miss"), ("ka", "hit"), ("kb", "hit")):
            r = c.post(
                "/v1/chat/completions",
                json=chat(**GREEDY),
                headers={"Authorization": f"Bearer {key}"},
            )
            assert r.headers["x-tokenmill-cache"] == expected, key


def test_a_hit_streams_in_the_same_sse_shape():
    with gateway_client(FakeEngine()) as c:
        c.post("/v1/chat/completions", json=chat(**GREEDY))
        r = c.post(
            "/v1/chat/completions",
            json=chat(stream=True, **GREEDY, stream_options={"include_usage": True}),
        )
        assert r.headers["x-tokenmill-cache"] == "hit"
        events = sse_events(r.text)
        assert events[-1] == "[DONE]"
        assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        text = "".join(
            e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"]
        )
        assert text == "Hello"  # max_tokens 5
        assert events[-2]["usage"]["completion_tokens"] == 5
        finish = [e["choices"][0]["finish_reason"] for e in events[:-1] if e["choices"]]
        assert finish[-1] == "length"


def test_no_cache_bypasses_both_lookup_and_store():
    engine = FakeEngine()
    with gateway_client(engine) as c:
        headers = {"Cache-Control": "no-cache"}
        r = c.post("/v1/chat/completions", json=chat(**GREEDY), headers=headers)
        assert "x-tokenmill-cache" not in r.headers
        assert (
            c.post("/v1/chat/completions", json=chat(**GREEDY)).headers["x-tokenmill-cache"]
            == "miss"
        )
        c.post("/v1/chat/completions", json=chat(**GREEDY), headers=headers)
        assert len(engine.calls) == 3


def test_response_cache_off():
    with gateway_client(FakeEngine(), response_cache="off") as c:
        for _ in range(2):
            r = c.post("/v1/chat/completions", json=chat(**GREEDY))
            assert "x-tokenmill-cache" not in r.headers


class WordEmbedder:
    """Bag of words into 16 dims: prompts with the same words embed identically."""

    async def embed_texts(self, texts):
        out = np.zeros((len(texts), 16), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().replace("?", " ").split():
                out[i, hash(word) % 16] += 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_the_semantic_cache_matches_near_prompts_of_the_same_settings():
    engine = FakeEngine()
    with gateway_client(
        engine, embedder=WordEmbedder(), response_cache="semantic", semantic_threshold=0.99
    ) as c:
        first = c.post("/v1/completions", json={"prompt": "what is the sky", **GREEDY})
        near = c.post("/v1/completions", json={"prompt": "What is the sky?", **GREEDY})
        far = c.post("/v1/completions", json={"prompt": "name a prime number", **GREEDY})
        other_settings = c.post(
            "/v1/completions", json={"prompt": "what is the sky", "max_tokens": 3, **GREEDY}
        )
        assert [r.headers["x-tokenmill-cache"] for r in (first, near, far, other_settings)] == [
            "miss",
            "hit",
            "miss",
            "miss",
        ]


def test_the_memory_store_is_bounded_by_entries_bytes_and_ttl():
    now = [0.0]
    store = MemoryCacheStore(
        CacheLimits(max_entries=3, max_bytes=100, ttl_s=10), clock=lambda: now[0]
    )

    async def scenario():
        for k in "abc":
            await store.put(k, b"x" * 10)
        await store.get("a")  # a is now the most recently used
        await store.put("d", b"x" * 10)
        assert await store.get("b") is None and await store.get("a") is not None
        await store.put("e", b"y" * 90)  # bytes: evicts the least recently used
        assert store.num_bytes <= 100 and len(store) <= 3
        assert await store.get("e") == b"y" * 90
        await store.put("huge", b"z" * 101)  # larger than the cache: not stored
        assert await store.get("huge") is None
        now[0] = 11.0
        assert await store.get("e") is None and store.num_bytes < 100

    asyncio.run(scenario())


@pytest.mark.parametrize("path", ["/v1/completions"])
def test_echo_is_part_of_the_key(path):
    with gateway_client(FakeEngine()) as c:
        plain = c.post(path, json={"prompt": "abc", **GREEDY})
        echo = c.post(path, json={"prompt": "abc", "echo": True, **GREEDY})
        assert plain.headers["x-tokenmill-cache"] == echo.headers["x-tokenmill-cache"] == "miss"
        assert echo.json()["choices"][0]["text"].startswith("abc")


@pytest.mark.slow
def test_the_semantic_cache_with_the_real_encoder_matches_a_paraphrase():
    from tokenmill.config import AppConfig
    from tokenmill.config.setting import build
    from tokenmill.gateway.assemble import semantic_embedder

    embedder = semantic_embedder(build(AppConfig, {"response_cache": "semantic"}))
    try:
        engine = FakeEngine()
        with gateway_client(engine, embedder=embedder, response_cache="semantic") as c:
            # Cosines with the first (all-MiniLM-L6-v2): 0.98, then 0.08 for the haiku.
            prompts = [
                "Please tell me what the capital city of France is.",
                "Tell me what the capital city of France is.",
                "Write a haiku about autumn leaves.",
            ]
            results = [c.post("/v1/completions", json={"prompt": p, **GREEDY}) for p in prompts]
            assert [r.headers["x-tokenmill-cache"] for r in results] == ["miss", "hit", "miss"]
            assert len(engine.calls) == 2
    finally:
        embedder.service.close()
