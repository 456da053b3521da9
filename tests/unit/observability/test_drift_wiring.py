"""Drift wired into the server: the feed off the request path, GET /v1/monitoring/drift,
the gauges, the warning line, --drift-profile and `tokenmill drift profile`."""

from __future__ import annotations

import json
import logging
import random
import time

import numpy as np

from tests.unit.gateway.conftest import chat, gateway_client
from tests.unit.observability.test_metrics import scrape, value
from tests.unit.server.fake_engine import FakeEngine
from tokenmill.cli.main import main
from tokenmill.observability.drift import Profile

WORDS = [
    "river",
    "mountain",
    "city",
    "garden",
    "history",
    "music",
    "science",
    "bread",
    "winter",
    "ocean",
]
DRIFT = {"drift": True, "drift_reference": 40, "drift_window": 40, "drift_seed": 0}


class FakeEmbedder:
    """Deterministic 8-dim features of the text: enough for MMD to see a change of
    language and length, with no model to load."""

    def __init__(self):
        self.batches: list[int] = []

    async def embed_texts(self, texts):
        self.batches.append(len(texts))
        rows = []
        for t in texts:
            n = max(len(t), 1)
            rows.append(
                [
                    len(t) / 200,
                    sum(c.isascii() and c.isalpha() for c in t) / n,
                    sum(not c.isascii() for c in t) / n,
                    t.count(" ") / n,
                    sum(c in "(){}=;" for c in t) / n,
                    (hash(t) % 97) / 970,
                    t.count("e") / n,
                    t.count("a") / n,
                ]
            )
        return np.asarray(rows, dtype=np.float32)


def english(rng: random.Random) -> str:
    return "Tell me about the " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))


def russian(rng: random.Random) -> str:
    words = ["река", "гора", "город", "сад", "история", "музыка", "наука", "хлеб", "зима", "океан"]
    return "Расскажи мне про " + " ".join(rng.choice(words) for _ in range(rng.randint(20, 40)))


def send(client, prompts):
    for p in prompts:
        r = client.post("/v1/chat/completions", json=chat(p, temperature=0.5))
        assert r.status_code == 200


def report_after(client, observed: int) -> dict:
    """The drift report once the feed has observed `observed` records."""
    deadline = time.monotonic() + 30
    while True:
        body = client.get("/v1/monitoring/drift").json()
        if body["feed"]["observed"] >= observed or time.monotonic() > deadline:
            assert body["feed"]["observed"] == observed, body["feed"]
            return body
        time.sleep(0.05)


def test_drift_is_404_when_off():
    with gateway_client(FakeEngine()) as c:
        r = c.get("/v1/monitoring/drift")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_enabled"
    assert "--drift" in r.json()["error"]["message"]


def test_collecting_then_ok_in_distribution_then_drift_on_another_language(caplog):
    rng = random.Random(7)
    embedder = FakeEmbedder()
    with gateway_client(FakeEngine(max_model_len=1024), drift_embedder=embedder, **DRIFT) as c:
        send(c, [english(rng) for _ in range(20)])
        first = report_after(c, 20)
        assert first["status"] == "collecting" and first["reference_size"] == 20
        send(c, [english(rng) for _ in range(60)])
        same = report_after(c, 80)
        assert same["status"] == "ok", [(s["name"], s["p_value"]) for s in same["signals"]]
        assert same["window_size"] == 40 and same["reference_size"] == 40
        with caplog.at_level(logging.WARNING, logger="tokenmill.observability.drift.monitor"):
            send(c, [russian(rng) for _ in range(40)])
            shifted = report_after(c, 120)
        samples = scrape(c)
    assert shifted["status"] == "drift"
    by_name = {s["name"]: s for s in shifted["signals"]}
    for name in ("prompt_embedding", "prompt_script"):
        assert by_name[name]["status"] == "drift", by_name[name]
        assert by_name[name]["p_value"] <= by_name[name]["threshold"]
        assert value(samples, "tokenmill:drift_detected", model_name="fake-model", signal=name) == 1
    score = value(
        samples, "tokenmill:drift_score", model_name="fake-model", signal="prompt_embedding"
    )
    assert score == by_name["prompt_embedding"]["score"] and score > 0
    assert any("drift on signal" in r.getMessage() for r in caplog.records)
    assert sum(embedder.batches) == 120


def test_profile_cli_then_served_reference(tmp_path, capsys):
    rng = random.Random(3)
    records = tmp_path / "requests.jsonl"
    records.write_text(
        "\n".join(json.dumps({"prompt": english(rng), "output": "Hello world"}) for _ in range(50))
    )
    out = tmp_path / "profile.json"
    assert main(["drift", "profile", str(records), "-o", str(out), "--no-embeddings"]) == 0
    assert Profile.load(out).size == 50
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"no_prompt": 1}\n')
    assert (
        main(["drift", "profile", str(bad), "-o", str(tmp_path / "x.json"), "--no-embeddings"]) == 2
    )
    assert "bad.jsonl:2" in capsys.readouterr().err
    with gateway_client(
        FakeEngine(), drift_embedder=FakeEmbedder(), drift_profile=str(out), **DRIFT
    ) as c:
        send(c, [english(rng) for _ in range(40)])
        report = report_after(c, 40)
    assert report["status"] == "ok" and report["reference_size"] == 50
    status = {s["name"]: s["status"] for s in report["signals"]}
    assert status["prompt_embedding"] == "unavailable"  # the profile has no embeddings
    assert status["prompt_script"] == "ok"
