"""/v1/classify (zero-shot on a generative model) and /v1/ner (spaCy) through the
gateway."""

from __future__ import annotations

import pytest

from tests.unit.registry.conftest import registry_client, spec
from tokenmill.gateway.tasks import CONTENT_FREE


def test_zero_shot_scores_each_label_by_its_calibrated_likelihood():
    # The fake engine gives every prompt token logprob -0.25, so a label's raw score is
    # -0.25 x its tokens (one per character): "no" beats "maybe" by 3 x 0.25 whatever
    # the text. That bias is what calibration removes: the content-free inputs score the
    # same, their mean is subtracted, and both labels end at probability 0.5.
    with registry_client([spec("lm")]) as client:
        engine = client.deployer.registry.get("lm@1").model.backend.engine
        before = len(engine.calls)
        body = {"model": "lm", "input": ["a", "b"], "labels": ["maybe", "no"]}
        r = client.post("/v1/classify", json=body)
        assert r.status_code == 200, r.text
        first = r.json()
        assert first["model"] == "lm@1"
        calls = engine.calls[before:]
        assert len(calls) == (2 + len(CONTENT_FREE)) * 2  # the prior is computed once
        for i, row in enumerate(first["data"]):
            assert row["index"] == i
            assert [s["probability"] for s in row["scores"]] == pytest.approx([0.5, 0.5])
        assert all(c.params.max_tokens == 0 and c.params.prompt_logprobs == 0 for c in calls)
        # both labels of one input share the instruction prefix, label tokens last
        assert calls[0].prompt_token_ids[:-5] == calls[1].prompt_token_ids[:-2]
        assert first["usage"]["prompt_tokens"] == sum(len(c.prompt_token_ids) for c in calls)

        before = len(engine.calls)
        r = client.post("/v1/classify", json=body)
        calls = engine.calls[before:]
        assert len(calls) == 4  # the cached prior: only the inputs' prompts
        assert r.json()["data"] == first["data"]
        assert r.json()["usage"]["prompt_tokens"] == sum(len(c.prompt_token_ids) for c in calls)


def test_classify_checks_its_input():
    with registry_client([spec("lm")]) as client:
        for bad in (
            {"input": "x"},
            {"input": "x", "labels": ["a"]},
            {"input": "x", "labels": ["a", "a"]},
            {"input": "x", "labels": ["a", "b"], "task": "sentiment"},
            {"input": [], "task": "sentiment"},
        ):
            r = client.post("/v1/classify", json=bad)
            assert r.status_code in (400, 422), (bad, r.text)
        r = client.post("/v1/classify", json={"input": "great!", "task": "sentiment"})
        assert r.status_code == 200
        assert {s["label"] for s in r.json()["data"][0]["scores"]} == {"positive", "negative"}


def test_ner_returns_entities_with_offsets():
    pytest.importorskip("spacy")
    text = "Barack Obama visited Paris in March 2015 with Google engineers."
    with registry_client([spec("lm"), spec("ents", task="ner")]) as client:
        r = client.post("/v1/ner", json={"input": [text, "nothing here"]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "ents@1"
        entities = body["data"][0]["entities"]
        for e in entities:
            assert text[e["start"] : e["end"]] == e["text"]
        found = {(e["text"], e["label"]) for e in entities}
        assert ("Barack Obama", "PERSON") in found and ("Paris", "GPE") in found
        assert body["data"][1]["entities"] == []
        r = client.post("/v1/ner", json={"model": "lm", "input": text})
        assert r.status_code == 400 and r.json()["error"]["code"] == "wrong_task"
