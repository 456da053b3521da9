"""API keys: the keys file, constant-time lookup, 401 everywhere but the probes, 403."""

from __future__ import annotations

import hashlib

import pytest

from tests.unit.gateway.conftest import chat, gateway_client
from tests.unit.server.fake_engine import FakeEngine
from tokenmill.errors import ConfigError
from tokenmill.gateway.auth import AuthenticationError, KeyStore

KEYS = """
[keys.alice]
key = "sk-alice"
rpm = 60
models = ["fake-model"]

[keys.bob]
sha256 = "{bob}"
models = ["other-model"]

[keys.ops]
key = "sk-ops"
admin = true
"""


@pytest.fixture
def keys_file(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text(KEYS.replace("{bob}", hashlib.sha256(b"sk-bob").hexdigest()))
    return str(path)


def test_the_keys_file_names_each_key_and_its_rights(keys_file):
    store = KeyStore.from_settings(("sk-admin",), keys_file)
    alice = store.authenticate("sk-alice")
    assert (alice.name, alice.rpm, alice.models, alice.admin) == (
        "alice",
        60,
        ("fake-model",),
        False,
    )
    assert store.authenticate("sk-bob").name == "bob"  # stored as a digest only
    assert store.authenticate("sk-ops").admin
    assert store.authenticate("sk-admin").name == "admin" and store.authenticate("sk-admin").admin
    for bad in (None, "", "sk-alic", "sk-alice "):
        with pytest.raises(AuthenticationError):
            store.authenticate(bad)


@pytest.mark.parametrize(
    "content, message",
    [
        ("[keys.a]\nrpm = 5\n", "exactly one of key or sha256"),
        ('[keys.a]\nkey = "k"\nsha256 = "00"\n', "exactly one of key or sha256"),
        ('[keys.a]\nsha256 = "zz"\n', "hex digest"),
        ('[keys.a]\nkey = "k"\nrpm = 0\n', "rpm must be a positive integer"),
        ('[keys.a]\nkey = "k"\nmodel = ["x"]\n', "unknown field"),
        ("nothing = 1\n", r"no \[keys\.NAME\] tables"),
        ("[keys.a\n", "cannot parse"),
    ],
)
def test_bad_keys_files_are_config_errors(tmp_path, content, message):
    path = tmp_path / "k.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        KeyStore.from_settings((), str(path))


def test_without_keys_everything_is_open():
    with gateway_client(FakeEngine()) as c:
        assert c.get("/v1/models").status_code == 200
        assert c.post("/v1/chat/completions", json=chat()).status_code == 200


PROTECTED = [
    "/v1/models",
    "/version",
    "/tokenizer_info",
    "/v1/engine/stats",
    "/openapi.json",
    "/docs",
    "/no-such-route",
]


def test_with_keys_every_endpoint_but_the_probes_needs_one(keys_file):
    with gateway_client(FakeEngine(), api_key=("sk-admin",), keys=keys_file) as c:
        for path in PROTECTED:
            r = c.get(path)
            assert r.status_code == 401, path
            assert r.json()["error"]["code"] == "invalid_api_key", path
        for path in ("/tokenize", "/detokenize", "/v1/chat/completions", "/v1/completions"):
            assert c.post(path, json={}).status_code == 401, path
        wrong = c.get("/v1/models", headers={"Authorization": "Bearer sk-nope"})
        assert wrong.status_code == 401 and "Incorrect API key" in wrong.json()["error"]["message"]
        assert c.get("/health").status_code == 200 and c.get("/ready").status_code == 200
        for headers in ({"Authorization": "Bearer sk-alice"}, {"x-api-key": "sk-alice"}):
            assert c.get("/v1/models", headers=headers).status_code == 200


def test_a_key_may_only_use_its_models(keys_file):
    with gateway_client(FakeEngine(), keys=keys_file) as c:
        ok = c.post(
            "/v1/chat/completions", json=chat(), headers={"Authorization": "Bearer sk-alice"}
        )
        assert ok.status_code == 200
        r = c.post("/v1/chat/completions", json=chat(), headers={"Authorization": "Bearer sk-bob"})
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "model_not_allowed"
        assert r.json()["error"]["param"] == "model"


def test_keys_never_reach_the_logs(keys_file, caplog):
    with gateway_client(FakeEngine(), keys=keys_file, audit_log=None) as c:
        c.post("/v1/chat/completions", json=chat(), headers={"Authorization": "Bearer sk-alice"})
        c.get("/v1/models", headers={"Authorization": "Bearer sk-wrong-secret"})
    assert "sk-alice" not in caplog.text and "sk-wrong-secret" not in caplog.text
