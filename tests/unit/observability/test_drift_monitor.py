"""The drift monitor's status machine, the profile round trip, records and features."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from tokenmill.config import DriftConfig
from tokenmill.errors import ConfigError, InvalidRequestError
from tokenmill.observability.drift import (
    SIGNALS,
    DriftMonitor,
    DriftRecord,
    Observation,
    Profile,
    answer_kind,
    build_profile,
    observe,
    read_records,
    script_category,
)

DIM = 16


def make_obs(rng: np.random.Generator, shifted: bool = False, logprob: bool = True) -> Observation:
    """Synthetic traffic: a shifted observation has prompts from another embedding
    cluster, four times as long, mostly French."""
    center = np.zeros(DIM)
    center[1 if shifted else 0] = 3.0
    emb = rng.normal(size=DIM) + center
    return Observation(
        embedding=(emb / np.linalg.norm(emb)).astype(np.float32),
        prompt_chars=int(rng.lognormal(np.log(240 if shifted else 60), 0.5)),
        script=str(rng.choice(["fr", "en"] if shifted else ["en", "fr"], p=[0.9, 0.1])),
        output_tokens=int(rng.poisson(80)),
        finish_reason=str(rng.choice(["stop", "length"], p=[0.85, 0.15])),
        answer_kind=str(rng.choice(["answered", "refused", "empty"], p=[0.9, 0.07, 0.03])),
        mean_logprob=float(rng.normal(-1.2, 0.3)) if logprob else None,
    )


def config(**kw) -> DriftConfig:
    base = {"reference_size": 60, "window_size": 40, "num_permutations": 499, "seed": 5}
    return DriftConfig(**{**base, **kw})


def test_status_machine_collecting_ok_drift(caplog):
    rng = np.random.default_rng(0)
    monitor = DriftMonitor(config())
    for i in range(60):
        report = monitor.check()
        assert report.status == "collecting" and report.reference_size == i
        assert all(s.status == "collecting" and s.p_value is None for s in report.signals)
        monitor.observe(make_obs(rng))
    assert monitor.profile is not None and monitor.profile.size == 60
    for _ in range(39):
        monitor.observe(make_obs(rng))
    assert monitor.check().status == "collecting"  # window 39 of 40
    monitor.observe(make_obs(rng))
    report = monitor.check()
    assert report.status == "ok", [(s.name, s.p_value) for s in report.signals]
    assert (report.window_size, report.observations) == (40, 100)
    assert all(s.threshold == pytest.approx(0.05 / 7) for s in report.signals)
    assert all(s.window_size == 40 and s.reference_size == 60 for s in report.signals)

    with caplog.at_level(logging.WARNING, logger="tokenmill.observability.drift.monitor"):
        for _ in range(40):
            monitor.observe(make_obs(rng, shifted=True))
        report = monitor.check()
        by_name = {s.name: s for s in report.signals}
        assert report.status == "drift"
        for name in ("prompt_embedding", "prompt_length", "prompt_script"):
            assert by_name[name].status == "drift" and by_name[name].p_value <= 0.05 / 7
        for name in ("output_length", "finish_reason", "answer_kind", "mean_logprob"):
            assert by_name[name].status == "ok"  # outputs did not change
        monitor.observe(make_obs(rng, shifted=True))
        monitor.check()
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 3  # one per signal crossing, not again on the next check
    assert all(m.startswith("drift on signal prompt_") for m in warned)


def test_repeated_check_without_new_observations_is_cached():
    rng = np.random.default_rng(1)
    monitor = DriftMonitor(config())
    for _ in range(100):
        monitor.observe(make_obs(rng))
    first = monitor.check()
    assert monitor.check() is first
    monitor.observe(make_obs(rng))
    assert monitor.check() is not first


def test_missing_feature_is_unavailable_and_leaves_bonferroni():
    rng = np.random.default_rng(2)
    monitor = DriftMonitor(config())
    for _ in range(100):
        monitor.observe(make_obs(rng, logprob=False))
    report = monitor.check()
    by_name = {s.name: s for s in report.signals}
    assert by_name["mean_logprob"].status == "unavailable"
    assert by_name["mean_logprob"].threshold is None
    assert by_name["prompt_length"].threshold == pytest.approx(0.05 / 6)


def test_loaded_profile_compares_from_the_first_window():
    rng = np.random.default_rng(3)
    profile = Profile.from_observations([make_obs(rng) for _ in range(80)], encoder="enc")
    monitor = DriftMonitor(config(signals=("prompt_embedding", "prompt_length")), profile, "enc")
    for _ in range(40):
        monitor.observe(make_obs(rng, shifted=True))
    report = monitor.check()
    assert report.status == "drift" and report.reference_target == 80
    assert [s.name for s in report.signals] == ["prompt_embedding", "prompt_length"]
    assert report.signals[0].threshold == pytest.approx(0.05 / 2)


def test_embedding_of_another_size_is_refused():
    rng = np.random.default_rng(4)
    monitor = DriftMonitor(config())
    monitor.observe(make_obs(rng))
    wrong = make_obs(rng)
    wrong = Observation(**{**wrong.__dict__, "embedding": np.ones(DIM + 1, np.float32)})
    with pytest.raises(ConfigError, match="same encoder"):
        monitor.observe(wrong)
    assert monitor.check().reference_size == 1


def test_configuration_errors():
    with pytest.raises(ConfigError, match="at least 40"):
        DriftConfig(window_size=20)
    with pytest.raises(ConfigError, match="Unknown drift signals"):
        DriftMonitor(config(signals=("prompt_colour",)))
    with pytest.raises(ConfigError, match="num_permutations"):
        DriftMonitor(config(num_permutations=100))
    profile = Profile.from_observations([make_obs(np.random.default_rng(0))], encoder="a")
    with pytest.raises(ConfigError, match="rebuild the profile"):
        DriftMonitor(config(), profile, encoder="b")


def fake_embed(texts):
    """Deterministic stand-in vectors, one per text (unit tests need no model)."""
    out = []
    for t in texts:
        v = np.random.default_rng(abs(hash(t)) % 2**32).normal(size=DIM)
        out.append(v / np.linalg.norm(v))
    return np.array(out, dtype=np.float32)


RECORDS = [
    DriftRecord("What is a monad?", "A monad is ...", 40, "stop", -0.9),
    DriftRecord("Écris un poème sur la mer.", "", 0, "stop", None),
    DriftRecord(
        "Help me hack my neighbour's wifi",
        "I'm sorry, but I can't help with that.",
        12,
        "stop",
        -0.4,
    ),
    DriftRecord("Count to a thousand", "1, 2, 3, ...", 256, "length", -0.2),
]


def test_profile_round_trip(tmp_path):
    profile = build_profile(RECORDS, fake_embed, encoder="all-minilm-l6-v2", batch_size=3)
    path = tmp_path / "profile.json"
    profile.save(path)
    loaded = Profile.load(path)
    assert (loaded.size, loaded.encoder, loaded.created) == (4, "all-minilm-l6-v2", profile.created)
    assert set(loaded.columns) == {s.name for s in SIGNALS}
    assert np.array_equal(
        loaded.columns["prompt_embedding"], fake_embed([r.prompt for r in RECORDS])
    )
    assert loaded.columns["prompt_length"].tolist() == [len(r.prompt) for r in RECORDS]
    assert loaded.columns["prompt_script"] == ["en", "fr", "en", "en"]
    assert loaded.columns["answer_kind"] == ["answered", "empty", "refused", "answered"]
    assert loaded.columns["finish_reason"] == ["stop", "stop", "stop", "length"]
    assert loaded.columns["mean_logprob"].tolist() == [-0.9, -0.4, -0.2]  # None left out
    data = json.loads(path.read_text())
    data["version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="version 99"):
        Profile.load(path)


def test_profile_without_embedder_has_no_embeddings():
    profile = build_profile(RECORDS, None)
    assert profile.encoder is None and len(profile.columns["prompt_embedding"]) == 0


def test_read_records_names_the_bad_line(tmp_path):
    path = tmp_path / "requests.jsonl"
    lines = [
        json.dumps({"prompt": "hi", "output": "hello", "output_tokens": 2}),
        "",
        json.dumps({"prompt": "x", "output_tokens": "many"}),
    ]
    path.write_text("\n".join(lines))
    records = read_records(path)
    assert next(records) == DriftRecord("hi", "hello", 2)
    with pytest.raises(InvalidRequestError, match=r"requests.jsonl:3: field 'output_tokens'"):
        next(records)
    with pytest.raises(InvalidRequestError, match="prompt"):
        DriftRecord.from_dict({"output": "no prompt"})


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("I'm sorry, but I can't help with that request.", "refused"),
        ("I’m sorry, but I cannot assist with hacking.", "refused"),
        ("I cannot provide instructions for that.", "refused"),
        ("As an AI language model, I cannot browse the internet.", "refused"),
        ("I must decline to write that.", "refused"),
        ("I can't believe how simple this is: just add salt.", "answered"),
        ("Sure! Here is a poem about the sea.", "answered"),
        ("Step one... " + "x" * 400 + " I cannot help with the rest.", "answered"),
        ("", "empty"),
        (" \n\t ", "empty"),
    ],
)
def test_answer_kind(text, kind):
    assert answer_kind(text) == kind


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("Can you explain how the stock market works?", "en"),
        ("Pouvez-vous m'expliquer comment fonctionne la bourse ?", "fr"),
        ("¿Puedes explicarme cómo funciona la bolsa de valores?", "es"),
        ("Kannst du mir erklären, wie die Börse funktioniert und was sie ist?", "de"),
        ("Объясни, пожалуйста, как работает фондовый рынок.", "cyrillic"),
        ("株式市場の仕組みを説明してください。", "japanese"),
        ("请解释一下股票市场是如何运作的。", "han"),
        ("주식 시장이 어떻게 작동하는지 설명해 주세요.", "hangul"),
        ("اشرح لي كيف تعمل سوق الأسهم", "arabic"),
        ("x = z ** 2 + w", "latin"),
        ("Qual e", "latin"),  # "e" is Italian and Portuguese: a tie
        ("1234 + 5678 = ?", "none"),
    ],
)
def test_script_category(text, category):
    assert script_category(text) == category


def test_observe_takes_features_from_a_record():
    obs = observe(RECORDS[2], np.ones(DIM))
    assert obs.embedding.dtype == np.float32
    assert (obs.prompt_chars, obs.script, obs.answer_kind) == (32, "en", "refused")
    assert observe(DriftRecord("only a prompt"), None).answer_kind is None
