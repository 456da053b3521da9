"""Shadow traffic: replayed on the shadow version, answers compared, never returned."""

from __future__ import annotations

import time

from tests.unit.registry import conftest
from tests.unit.registry.conftest import chat, registry_client, spec


def _wait_compared(card_of, n: int) -> dict:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        summary = card_of()["shadow_compare"]
        if summary["compared"] >= n:
            return summary
        time.sleep(0.02)
    raise AssertionError(f"only {card_of()['shadow_compare']} after 5 s")


def test_shadow_gets_a_copy_and_is_compared(monkeypatch):
    monkeypatch.setitem(conftest.SCRIPTS, "lm@2", "v1")  # same answer as v1
    monkeypatch.setitem(conftest.SCRIPTS, "lm@3", "v1 but longer")
    specs = [spec("lm", "1"), spec("lm", "2", shadow=True, traffic=0)]
    with registry_client(specs) as client:
        for i in range(6):
            r = client.post("/v1/chat/completions", json=chat(model="lm", temperature=0))
            assert r.json()["model"] == "lm@1"  # the shadow never answers a client
            assert r.json()["choices"][0]["message"]["content"] == "v1"

        def card():
            return client.get("/v1/models/lm@2").json()

        summary = _wait_compared(card, 6)
        assert summary["exact_match_rate"] == 1.0
        assert summary["mean_length_ratio"] == 1.0
        assert summary["failures"] == 0
        # non-greedy calls count for the length ratio, not for exact match
        client.post("/v1/chat/completions", json=chat(model="lm", temperature=1.0))
        summary = _wait_compared(card, 7)
        assert summary["greedy_compared"] == 6
        assert all(d.inflight == 0 for d in client.deployer.registry.deployments())


def test_shadow_difference_is_measured(monkeypatch):
    monkeypatch.setitem(conftest.SCRIPTS, "lm@3", "v1 but longer")
    specs = [spec("lm", "1"), spec("lm", "3", shadow=True, traffic=0)]
    with registry_client(specs) as client:
        for _ in range(4):
            client.post(
                "/v1/completions",
                json={"model": "lm", "prompt": "x", "max_tokens": 40, "temperature": 0},
            )

        def card():
            return client.get("/v1/models/lm@3").json()

        summary = _wait_compared(card, 4)
        assert summary["exact_match_rate"] == 0.0
        assert summary["mean_length_ratio"] > 2.0  # "v1 but longer" vs "v1"
