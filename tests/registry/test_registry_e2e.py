"""The registry on real models, driven with the openai SDK."""

from __future__ import annotations

import base64
import collections
import threading
import time

import numpy as np
import openai
import pytest

from tests.e2e.conftest import start_server

pytestmark = pytest.mark.slow
AFTER_SWAP = sorted(
    ["smollm2", "smollm2@3", "smollm2@4", "gemma3", "gemma3@1", "minilm", "minilm@1"]
)


def test_models_lists_every_name_and_version(registry_server):
    client = registry_server.client()
    ids = [m.id for m in client.models.list()]
    assert ids == [
        "smollm2", "smollm2@1", "smollm2@2", "smollm2@4", "gemma3", "gemma3@1", "minilm", "minilm@1"
    ]  # fmt: skip
    cards = {c["id"]: c for c in registry_server.http.get("/v1/models").json()["data"]}
    assert cards["smollm2@1"]["precision"]["quantization"] is None
    assert cards["smollm2@2"]["precision"]["quantization"] == "int8"
    assert cards["smollm2@2"]["traffic"] == 10.0
    assert cards["smollm2@4"]["shadow"] is True and cards["smollm2@4"]["traffic"] == 0.0
    assert cards["minilm@1"]["task"] == "embed"


def test_gemma_is_served_beside_smollm2(registry_server):
    """The packaged Gemma 3 270M is the base model (not instruction-tuned): it continues
    text. Its greedy continuation is the one tests/gemma checks against transformers."""
    client = registry_server.client()
    raw = client.completions.with_raw_response.create(
        model="gemma3", prompt="The capital of France is", max_tokens=12, temperature=0
    )
    assert raw.headers["x-tokenmill-model-version"] == "1"
    reply = raw.parse()
    assert reply.model == "gemma3@1"
    assert reply.choices[0].text.startswith(" the capital of the country of France"), reply
    chunks = client.chat.completions.create(
        model="gemma3",
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=8,
        stream=True,
    )
    assert {c.model for c in chunks} == {"gemma3@1"}


def test_shadow_version_compares_without_answering(registry_server):
    """Half the live calls to smollm2 are replayed on the int8 shadow v4; its answers
    reach no client but are compared, in /v1/models and in /metrics."""
    client = registry_server.client()
    for i in range(12):
        reply = client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": f"Give me a word that rhymes with {i}."}],
            max_tokens=6,
            temperature=0,
            user=f"s{i}",
        )
        assert reply.model in ("smollm2@1", "smollm2@2")
    deadline = time.monotonic() + 120
    while True:  # shadow calls finish after the live answer was sent
        card = registry_server.http.get("/v1/models/smollm2@4").json()
        summary = card["shadow_compare"]
        if summary["compared"] >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert summary["failures"] == 0, summary
    assert summary["compared"] >= 2 and summary["greedy_compared"] == summary["compared"]
    assert 0.0 <= summary["exact_match_rate"] <= 1.0
    assert summary["mean_length_ratio"] > 0
    metrics = registry_server.http.get("/metrics").text
    line = 'tokenmill:shadow_compared_total{model_name="smollm2@4"} '
    assert any(row.startswith(line) and float(row.split()[-1]) >= 2 for row in metrics.splitlines())
    assert 'tokenmill:num_requests_running{model_name="gemma3@1"}' in metrics


def test_versions_answer_and_report_themselves(registry_server):
    client = registry_server.client()
    for version in ("1", "2"):
        raw = client.chat.completions.with_raw_response.create(
            model=f"smollm2@{version}",
            messages=[{"role": "user", "content": "Name a colour."}],
            max_tokens=8,
            temperature=0,
        )
        assert raw.headers["x-tokenmill-model-version"] == version
        reply = raw.parse()
        assert reply.model == f"smollm2@{version}"
        assert reply.usage.completion_tokens > 0
    seen = collections.Counter()
    for i in range(40):
        reply = client.completions.create(
            model="smollm2", prompt="Hi", max_tokens=1, temperature=0, user=f"u{i}"
        )
        seen[reply.model] += 1
    assert set(seen) <= {"smollm2@1", "smollm2@2"} and seen["smollm2@1"] >= 28, seen


def test_embeddings_with_the_openai_sdk(registry_server):
    from tokenmill.model.encoders import SentenceEncoder

    client = registry_server.client()
    texts = ["The cat sat on the mat.", "Stock markets fell sharply today."]
    reply = client.embeddings.create(model="minilm", input=texts)
    assert reply.model == "minilm@1"
    got = np.array([d.embedding for d in reply.data], dtype=np.float32)
    assert got.shape == (2, 384)
    want = SentenceEncoder.load().embed(texts).vectors
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= 0.999, cos
    assert reply.usage.prompt_tokens == reply.usage.total_tokens > 10
    b64 = client.embeddings.create(model="minilm", input=texts[0], encoding_format="base64")
    decoded = np.frombuffer(base64.b64decode(b64.data[0].embedding), dtype="<f4")
    assert np.allclose(decoded, got[0], atol=1e-6)
    with pytest.raises(openai.BadRequestError, match="serves the .generate. task"):
        client.embeddings.create(model="smollm2", input="hello")
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nope", input="hello")


def _drive(server, stop: threading.Event, log: list, errors: list, worker: int) -> None:
    """Streams chat completions to `smollm2` until `stop`; logs each call's models."""
    client = server.client(timeout=120)
    i = 0
    while not stop.is_set():
        i += 1
        started = time.monotonic()
        try:
            stream = client.chat.completions.create(
                model="smollm2",
                messages=[{"role": "user", "content": "Count to five."}],
                max_tokens=12,
                temperature=0,
                stream=True,
                user=f"w{worker}-{i}",
            )
            models, text = set(), []
            for chunk in stream:
                models.add(chunk.model)
                if chunk.choices and chunk.choices[0].delta.content:
                    text.append(chunk.choices[0].delta.content)
            log.append((started, time.monotonic(), models, "".join(text), worker))
        except Exception as exc:  # noqa: BLE001 - every failure is reported by the test
            errors.append(repr(exc))


def test_hot_swap_under_load_then_restart(registry_server, models_file, tmp_path_factory):
    """Load v3 while clients stream, move all traffic to it, unload v1 and v2: no call
    fails, each is served wholly by one version; a restart serves v3 alone."""
    admin = registry_server.http
    stop, log, errors = threading.Event(), [], []
    workers = [
        threading.Thread(target=_drive, args=(registry_server, stop, log, errors, w))
        for w in range(3)
    ]
    for w in workers:
        w.start()
    try:
        time.sleep(2)
        r = admin.post(
            "/admin/models",
            json={"name": "smollm2", "version": "3", "quantization": "int8", "traffic": 0},
        )
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 180
        while admin.get("/v1/models/smollm2@3").json()["status"] != "ready":
            assert time.monotonic() < deadline, "smollm2@3 never loaded"
            time.sleep(0.5)
        r = admin.patch("/admin/models/smollm2@3", json={"traffic": 100})
        assert r.status_code == 200, r.text
        swapped_at = time.monotonic()
        for old in ("smollm2@1", "smollm2@2"):
            r = admin.delete(f"/admin/models/{old}", params={"wait": "true"}, timeout=120)
            assert r.status_code == 200, r.text
        # Run until every worker has finished a call it began after the swap: a fixed
        # sleep let a slow machine stop the workers while their pre-swap calls still ran.
        deadline = time.monotonic() + 120
        while len({w for start, _, _, _, w in list(log) if start > swapped_at}) < len(workers):
            assert time.monotonic() < deadline, "no call begun after the swap completed"
            time.sleep(0.2)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=120)
    assert errors == [], errors
    assert len(log) >= 10, f"only {len(log)} calls completed"
    assert all(len(models) == 1 for _, _, models, _, _ in log), "a call was served by two versions"
    assert all(text for _, _, _, text, _ in log)
    # Routing is decided when a call starts: calls that ended before the swap ran on the
    # old versions, calls that started after it run on the new one.
    before = {next(iter(m)) for _, end, m, _, _ in log if end < swapped_at}
    after = {next(iter(m)) for start, _, m, _, _ in log if start > swapped_at}
    assert before <= {"smollm2@1", "smollm2@2"} and before, before
    assert after == {"smollm2@3"}, after
    ids = [m["id"] for m in admin.get("/v1/models").json()["data"]]
    assert sorted(ids) == AFTER_SWAP, ids

    restarted = start_server(
        tmp_path_factory,
        "registry-restart",
        "--models",
        str(models_file),
        "--kv-cache-memory-gib",
        "0.25",
        "--max-model-len",
        "2048",
    )
    try:
        ids = [m["id"] for m in restarted.http.get("/v1/models").json()["data"]]
        assert sorted(ids) == AFTER_SWAP, ids
        reply = restarted.client().completions.create(model="smollm2", prompt="Hi", max_tokens=2)
        assert reply.model == "smollm2@3"
    finally:
        assert restarted.stop() == 0
