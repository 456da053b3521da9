"""Routing by name, version, alias and sticky split; task endpoints through the gateway."""

from __future__ import annotations

import base64
import collections

import numpy as np
import pytest

from tests.unit.registry.conftest import chat, registry_client, spec
from tokenmill.errors import ConfigError
from tokenmill.gateway.models_file import read_models_file

SPECS = [
    spec("lm", "1", traffic=90),
    spec("lm", "2", traffic=10, quantization="int8"),
    spec("enc", "1", task="embed"),
]


def test_models_file_checks(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(
        '[[models]]\nname="a"\ntraffic=60\n[[models]]\nname="a"\nversion="2"\ntraffic=30\n'
    )
    with pytest.raises(ConfigError, match="adds up to 90"):
        read_models_file(path)
    path.write_text('[[models]]\nname="a"\nshadow=true\ntraffic=5\n')
    with pytest.raises(ConfigError, match="shadow"):
        read_models_file(path)
    path.write_text('[[models]]\nname="a"\ncolour="red"\n')
    with pytest.raises(ConfigError, match="colour"):
        read_models_file(path)
    path.write_text('[[models]]\nname="a"\n[[models]]\nname="a"\n')
    with pytest.raises(ConfigError, match="twice"):
        read_models_file(path)
    path.write_text(
        '[[models]]\nname="a"\nversion=1\ntraffic=90\n[[models]]\nname="a"\nversion="2"\n'
        'traffic=10\nquantization="int8"\n[[models]]\nname="a"\nversion="3"\nshadow=true\n'
    )
    specs = read_models_file(path)
    assert [(s.key, s.traffic, s.shadow) for s in specs] == [
        ("a@1", 90.0, False),
        ("a@2", 10.0, False),
        ("a@3", 0.0, True),
    ]


def test_pinned_version_reports_itself():
    with registry_client(SPECS) as client:
        for version in ("1", "2"):
            r = client.post("/v1/chat/completions", json=chat(model=f"lm@{version}"))
            assert r.status_code == 200, r.text
            assert r.json()["model"] == f"lm@{version}"
            assert r.json()["choices"][0]["message"]["content"] == f"v{version}"
            assert r.headers["x-tokenmill-model-version"] == version
        r = client.post("/v1/chat/completions", json=chat(model="lm@stable"))
        assert r.json()["model"] == "lm@1"
        r = client.post("/v1/chat/completions", json=chat(model="lm@canary"))
        assert r.json()["model"] == "lm@2"
        r = client.post("/v1/chat/completions", json=chat(model="lm@7"))
        assert r.status_code == 404
        assert "lm@1, lm@2" in r.json()["error"]["message"]


def test_split_is_weighted_and_sticky_per_user():
    with registry_client(SPECS) as client:
        seen = collections.Counter()
        for i in range(300):
            user = f"user-{i}"
            versions = {
                client.post(
                    "/v1/completions",
                    json={"model": "lm", "prompt": "x", "max_tokens": 2, "user": user},
                ).json()["model"]
                for _ in range(2)
            }
            assert len(versions) == 1, f"{user} saw {versions}"
            seen[versions.pop()] += 1
        # 10% canary: 30 expected of 300; binomial sd ~5.2, so 12..48 is beyond 3 sd.
        assert 12 <= seen["lm@2"] <= 48, seen
        assert seen["lm@1"] + seen["lm@2"] == 300
        assert all(d.inflight == 0 for d in client.deployer.registry.deployments())


def test_split_is_sticky_per_key(tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text("".join(f'[keys.k{i}]\nkey = "sk-{i}"\n' for i in range(40)))
    with registry_client(SPECS, keys=str(keys)) as client:
        for i in range(40):
            auth = {"Authorization": f"Bearer sk-{i}"}
            answers = {
                client.post(
                    "/v1/chat/completions", json=chat(model="lm", user=f"u{j}"), headers=auth
                ).json()["model"]
                for j in range(3)
            }
            assert len(answers) == 1  # the key decides, not the user field


def test_models_lists_names_and_versions():
    with registry_client(SPECS) as client:
        cards = {c["id"]: c for c in client.get("/v1/models").json()["data"]}
        assert list(cards) == ["lm", "lm@1", "lm@2", "enc", "enc@1"]
        assert cards["lm"]["versions"] == ["1", "2"] and cards["lm"]["task"] == "generate"
        assert cards["lm@2"]["traffic"] == 10.0 and cards["lm@2"]["status"] == "ready"
        assert cards["enc@1"]["task"] == "embed"
        assert client.get("/v1/models/lm@2").json()["traffic"] == 10.0
        assert client.get("/v1/models/nope").status_code == 404


def test_embeddings_through_the_gateway():
    with registry_client(SPECS) as client:
        r = client.post("/v1/embeddings", json={"model": "enc", "input": ["ab", "xyz"]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "enc@1"
        assert [d["embedding"] for d in body["data"]] == [[4, 97, 0, 0], [5, 120, 0, 0]]
        assert body["usage"] == {"prompt_tokens": 9, "total_tokens": 9}
        r = client.post("/v1/embeddings", json={"input": "ab", "encoding_format": "base64"})
        vec = np.frombuffer(base64.b64decode(r.json()["data"][0]["embedding"]), dtype="<f4")
        assert vec.tolist() == [4, 97, 0, 0]
        r = client.post("/v1/embeddings", json={"model": "enc", "input": "x" * 40})
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
        r = client.post("/v1/embeddings", json={"model": "lm", "input": "ab"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "wrong_task"
        r = client.post("/v1/chat/completions", json=chat(model="enc"))
        assert r.status_code == 400 and "/v1/embeddings" in r.json()["error"]["message"]


def test_embeddings_obey_key_models_and_token_quota(tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text(
        '[keys.lm_only]\nkey = "sk-lm"\nmodels = ["lm"]\n[keys.small]\nkey = "sk-small"\ntpm = 10\n'
    )
    with registry_client(SPECS, keys=str(keys)) as client:
        r = client.post(
            "/v1/embeddings",
            json={"model": "enc", "input": "ab"},
            headers={"Authorization": "Bearer sk-lm"},
        )
        assert r.status_code == 403
        small = {"Authorization": "Bearer sk-small"}
        r = client.post("/v1/embeddings", json={"model": "enc", "input": "abcdef"}, headers=small)
        assert r.status_code == 200 and r.headers["x-ratelimit-remaining-tokens"] == "2"
        r = client.post("/v1/embeddings", json={"model": "enc", "input": "abcdef"}, headers=small)
        assert r.status_code == 429
        r = client.post("/v1/embeddings", json={"input": "ab"})
        assert r.status_code == 401
