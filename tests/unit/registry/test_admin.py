"""The admin API: who may call it, loading, traffic, promote/rollback, drain, budget,
persistence."""

from __future__ import annotations

import json
import time

from tests.unit.registry.conftest import chat, fake_model, registry_client, spec
from tokenmill.gateway.deployer import Deployer
from tokenmill.gateway.models_file import read_state

ADMIN = {"Authorization": "Bearer sk-admin"}


def _wait_status(client, key: str, status: str, headers=ADMIN) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        cards = {c["id"]: c for c in client.get("/admin/models", headers=headers).json()["data"]}
        if cards.get(key, {}).get("status", "gone") == status:
            return
        time.sleep(0.02)
    raise AssertionError(f"{key} never became {status}: {cards}")


def _traffic(client, headers=ADMIN) -> dict[str, float]:
    data = client.get("/admin/models", headers=headers).json()["data"]
    return {c["id"]: c["traffic"] for c in data}


def test_admin_needs_an_admin_key(tmp_path):
    with registry_client([spec("lm")]) as client:
        r = client.get("/admin/models")
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_required"
    with registry_client([spec("lm")], admin_open=True) as client:
        assert client.get("/admin/models").status_code == 200
    keys = tmp_path / "keys.toml"
    keys.write_text('[keys.user]\nkey = "sk-user"\n')
    with registry_client([spec("lm")], keys=str(keys), api_key=("sk-admin",)) as client:
        assert client.get("/admin/models").status_code == 401
        r = client.get("/admin/models", headers={"Authorization": "Bearer sk-user"})
        assert r.status_code == 403
        assert client.get("/admin/models", headers=ADMIN).status_code == 200


def test_load_shift_promote_rollback_and_persist(tmp_path):
    state = tmp_path / "state.json"

    async def loader(s):
        return fake_model(s)

    deployer = Deployer(loader, state_path=str(state))
    with registry_client([spec("lm")], deployer=deployer, api_key=("sk-admin",)) as client:
        r = client.post(
            "/admin/models",
            json={"name": "lm", "version": "2", "quantization": "int8", "traffic": 10},
            headers=ADMIN,
        )
        assert r.status_code == 202, r.text
        _wait_status(client, "lm@2", "ready")
        assert _traffic(client) == {"lm@1": 90.0, "lm@2": 10.0}
        assert (
            client.post("/v1/chat/completions", json=chat(model="lm@canary"), headers=ADMIN).json()[
                "model"
            ]
            == "lm@2"
        )
        r = client.patch("/admin/models/lm@2", json={"traffic": 50}, headers=ADMIN)
        assert r.status_code == 200
        assert _traffic(client) == {"lm@1": 50.0, "lm@2": 50.0}
        assert client.post("/admin/models/lm/promote", headers=ADMIN).status_code == 200
        assert _traffic(client) == {"lm@1": 0.0, "lm@2": 100.0}
        saved = {s.key: s.traffic for s in read_state(state)}
        assert saved == {"lm@1": 0.0, "lm@2": 100.0}
        assert client.post("/admin/models/lm/rollback", headers=ADMIN).status_code == 200
        assert _traffic(client) == {"lm@1": 100.0, "lm@2": 0.0}
        r = client.post("/v1/completions", json={"model": "lm", "prompt": "x"}, headers=ADMIN)
        assert r.json()["model"] == "lm@1"
        r = client.post("/admin/models", json={"name": "lm", "version": "2"}, headers=ADMIN)
        assert r.status_code == 409  # exists already
        r = client.delete("/admin/models/lm@2?wait=true", headers=ADMIN)
        assert r.status_code == 200
        assert json.loads(state.read_text())["models"] == [
            {
                "name": "lm",
                "version": "1",
                "source": None,
                "task": "generate",
                "dtype": "auto",
                "quantization": None,
                "traffic": 100.0,
                "shadow": False,
            }
        ]
        r = client.delete("/admin/models/lm@1", headers=ADMIN)
        assert r.status_code == 409  # the last version taking traffic


def test_unload_drains_in_flight_streams():
    with registry_client(
        [spec("lm", "1", traffic=50), spec("lm", "2", traffic=50)], admin_open=True
    ) as client:
        engine = client.deployer.registry.get("lm@1").model.backend.engine
        engine.step_delay_s = 0.02
        engine.script = "a long answer from version one"
        with client.stream(
            "POST",
            "/v1/completions",
            json={"model": "lm@1", "prompt": "x", "max_tokens": 40, "stream": True},
        ) as stream:
            lines = stream.iter_lines()
            first = next(line for line in lines if line.startswith("data: {"))
            r = client.delete("/admin/models/lm@1")
            assert r.status_code == 202 and r.json()["status"] == "draining"
            r = client.post("/v1/completions", json={"model": "lm", "prompt": "x"})
            assert r.json()["model"] == "lm@2"  # new calls go to the other version
            rest = [line for line in lines if line.startswith("data: {")]
        models = {json.loads(line[6:])["model"] for line in [first, *rest]}
        assert models == {"lm@1"}
        text = "".join(
            json.loads(line[6:])["choices"][0]["text"]
            for line in [first, *rest]
            if json.loads(line[6:])["choices"]
        )
        assert text == "a long answer from version one"  # served wholly, not cut
        _wait_status(client, "lm@1", "gone", headers={})
        assert _traffic(client, headers={}) == {"lm@2": 100.0}


def test_memory_budget_refuses_with_409():
    async def loader(s):
        return fake_model(s, weight_bytes=2**30)

    deployer = Deployer(loader, estimate=lambda s: 2**30, memory_budget_bytes=2 * 2**30 + 1)
    with registry_client(
        [spec("lm"), spec("enc", task="embed")], deployer=deployer, admin_open=True
    ) as client:
        r = client.post("/admin/models", json={"name": "lm", "version": "2", "traffic": 10})
        assert r.status_code == 409
        error = r.json()["error"]
        assert error["code"] == "memory_budget_exceeded"
        assert "lm@2 needs about 1.00 GiB" in error["message"]
        assert "enc@1" in error["message"] and "lm@1" in error["message"]
        assert _traffic(client, headers={}) == {"lm@1": 100.0, "enc@1": 100.0}


def test_a_frozen_registry_refuses_every_change_and_still_lists(tmp_path):
    """Under --ray each replica serves its own copy of the models file: the admin API
    reads it, and every change answers 409 with the reason (a change would reach one
    replica)."""
    state = tmp_path / "state.json"

    async def loader(s):
        return fake_model(s)

    deployer = Deployer(loader, state_path=None, frozen="Under --ray: edit the models file.")
    with registry_client(
        [spec("lm"), spec("lm", "2", traffic=0)], deployer=deployer, api_key=("sk-admin",)
    ) as client:
        assert set(_traffic(client)) == {"lm@1", "lm@2"}
        changes = [
            client.post(
                "/admin/models", json={"name": "lm", "version": "3", "traffic": 0}, headers=ADMIN
            ),
            client.patch("/admin/models/lm@2", json={"traffic": 50}, headers=ADMIN),
            client.post("/admin/models/lm/promote", headers=ADMIN),
            client.post("/admin/models/lm/rollback", headers=ADMIN),
            client.delete("/admin/models/lm@2", headers=ADMIN),
        ]
        for r in changes:
            assert r.status_code == 409, r.text
            error = r.json()["error"]
            assert error["code"] == "registry_frozen" and "models file" in error["message"]
        assert _traffic(client) == {"lm@1": 100.0, "lm@2": 0.0}
    assert not state.exists()
