"""`optimize --register --server`: a new version reaches a running `tokenmill serve
--models FILE` through its admin API at traffic 0, and the models file gains it too.

The "output directory" is a directory holding the packaged GGUF (what `optimize quantize
--method gguf-*` writes), so that the test costs a model load, not an optimization."""

from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import ServerProcess, start_server
from tokenmill.gateway.models_file import read_models_file
from tokenmill.model.registry import resolve_model
from tokenmill.optimize.registration import RegisterTarget, register

MODELS = """\
[[models]]
name = "smol"
version = "1"
"""


@pytest.fixture(scope="module")
def models_file(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("register") / "models.toml"
    path.write_text(MODELS)
    return path


@pytest.fixture(scope="module")
def registry(tmp_path_factory, models_file):
    srv = start_server(
        tmp_path_factory, "register", "--profile", "edge", "--models", str(models_file),
        "--admin-open",
    )  # fmt: skip
    yield srv
    code = srv.stop()
    assert code == 0, f"server exited with {code}:\n{srv.log()}"


def output_dir(tmp_path, name: str):
    out = tmp_path / name
    out.mkdir()
    (out / "model.gguf").symlink_to(resolve_model(None).path)
    return out


def wait_card(srv: ServerProcess, key: str, timeout_s: float = 180) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        cards = {c["id"]: c for c in srv.http.get("/admin/models").json()["data"]}
        if cards.get(key, {}).get("status") in ("ready", "failed"):
            return cards[key]
        time.sleep(0.5)
    pytest.fail(f"{key} not loaded after {timeout_s} s:\n{srv.log()}")


@pytest.mark.slow
def test_register_through_the_admin_api(registry: ServerProcess, models_file, tmp_path):
    out = output_dir(tmp_path, "q4")
    target = RegisterTarget("smol", models_file, server_url=registry.url)
    result = register(target, out)
    assert (result.spec.key, result.spec.traffic, result.server_status) == (
        "smol@2",
        0.0,
        "loading",
    )
    card = wait_card(registry, "smol@2")
    assert card["status"] == "ready", card
    assert card["traffic"] == 0.0
    stable = {c["id"]: c for c in registry.http.get("/admin/models").json()["data"]}["smol@1"]
    assert stable["traffic"] == 100.0  # the canary takes nothing until it is given a share
    client = registry.client()
    answer = client.chat.completions.create(
        model="smol@2",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0,
        max_tokens=12,
    )
    assert "Paris" in answer.choices[0].message.content
    specs = read_models_file(models_file)
    assert [(s.key, s.traffic, s.source) for s in specs] == [
        ("smol@1", 100.0, None),
        ("smol@2", 0.0, str(out.resolve())),
    ]
    # The same directory again is a clash, refused before the server is asked.
    with pytest.raises(Exception, match="already smol@2"):
        register(target, out)
    assert len(registry.http.get("/admin/models").json()["data"]) == 2
