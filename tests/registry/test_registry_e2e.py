"""The registry on real models, driven with the openai SDK."""

from __future__ import annotations

import collections

import numpy as np
import openai
import pytest

pytestmark = pytest.mark.slow


def test_models_lists_every_name_and_version(registry_server):
    client = registry_server.client()
    ids = [m.id for m in client.models.list()]
    assert ids == ["smollm2", "smollm2@1", "smollm2@2", "minilm", "minilm@1"]
    cards = {c["id"]: c for c in registry_server.http.get("/v1/models").json()["data"]}
    assert cards["smollm2@1"]["precision"]["quantization"] is None
    assert cards["smollm2@2"]["precision"]["quantization"] == "int8"
    assert cards["smollm2@2"]["traffic"] == 10.0
    assert cards["minilm@1"]["task"] == "embed"


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
    assert np.allclose(b64.data[0].embedding, got[0], atol=1e-6)  # the SDK decodes base64
    with pytest.raises(openai.BadRequestError, match="wrong_task|embeddings"):
        client.embeddings.create(model="smollm2", input="hello")
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nope", input="hello")
