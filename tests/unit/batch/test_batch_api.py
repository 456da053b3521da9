"""The Files and Batches endpoints in-process: OpenAI's shapes, errors, owners, cancel."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import openai.types
import pytest
from fastapi.testclient import TestClient

from tests.unit.batch.factories import CHAT, COMPLETIONS, chat_line, completion_line, read_jsonl
from tests.unit.server.conftest import wait_ready
from tests.unit.server.fake_engine import FakeEngine
from tokenmill.config import AppConfig
from tokenmill.config.setting import build
from tokenmill.gateway.assemble import build_pipeline
from tokenmill.gateway.auth import KeyStore
from tokenmill.server.app import build_app

FINAL = ("completed", "failed", "expired", "cancelled")


@contextmanager
def batch_client(engine: FakeEngine, state_dir: Path, **settings):
    config = build(AppConfig, {"state_dir": str(state_dir), **settings})
    keys = KeyStore.from_settings(config.gateway.api_key, config.gateway.keys)
    app = build_app(
        config.server,
        lambda: engine,
        pipeline_factory=lambda e: build_pipeline(e, config),
        keys=keys,
        batch=config.batch,
    )
    with TestClient(app, base_url="http://127.0.0.1") as client:
        wait_ready(client)
        yield client


def upload(client: TestClient, lines: list[str], headers=None) -> dict:
    content = ("\n".join(lines) + "\n").encode()
    r = client.post(
        "/v1/files",
        files={"file": ("requests.jsonl", content)},
        data={"purpose": "batch"},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    return r.json()


def create(client: TestClient, file_id: str, endpoint: str = CHAT, headers=None, **fields):
    body = {"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h", **fields}
    return client.post("/v1/batches", json=body, headers=headers)


def wait_final(client: TestClient, batch_id: str, headers=None, timeout_s: float = 10) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.get(f"/v1/batches/{batch_id}", headers=headers).json()
        if batch["status"] in FINAL:
            return batch
        assert time.monotonic() < deadline, batch
        time.sleep(0.02)


def content(client: TestClient, file_id: str, headers=None) -> list[dict]:
    r = client.get(f"/v1/files/{file_id}/content", headers=headers)
    assert r.status_code == 200
    return read_jsonl(r.text)


def test_a_batch_answers_like_the_endpoint_in_openai_shapes(tmp_path):
    engine = FakeEngine()
    with batch_client(engine, tmp_path) as client:
        file = upload(client, [chat_line("a", "x"), chat_line("b", "y"), "oops"])
        openai.types.FileObject.model_validate(file)
        assert (file["purpose"], file["filename"], file["status"]) == (
            "batch",
            "requests.jsonl",
            "processed",
        )
        assert client.get(f"/v1/files/{file['id']}").json() == file
        created = create(client, file["id"], metadata={"job": "nightly"})
        assert created.status_code == 200, created.text
        openai.types.Batch.model_validate(created.json())
        assert created.json()["status"] == "validating"
        batch = wait_final(client, created.json()["id"])
        openai.types.Batch.model_validate(batch)
        assert batch["status"] == "completed" and batch["metadata"] == {"job": "nightly"}
        assert batch["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
        for stamp in ("in_progress_at", "finalizing_at", "completed_at"):
            assert batch[stamp] >= batch["created_at"]
        outputs = content(client, batch["output_file_id"])
        direct = client.post("/v1/chat/completions", json=chat_line_body("x")).json()
        a = next(o for o in outputs if o["custom_id"] == "a")
        assert a["error"] is None and a["id"].startswith("batch_req_")
        assert a["response"]["status_code"] == 200
        assert a["response"]["request_id"] == a["response"]["body"]["id"]
        assert a["response"]["body"]["choices"] == direct["choices"]
        assert a["response"]["body"]["usage"] == direct["usage"]
        errors = content(client, batch["error_file_id"])
        assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [(None, "invalid_json")]
        assert "Line 3" in errors[0]["error"]["message"]
        out_file = client.get(f"/v1/files/{batch['output_file_id']}").json()
        assert out_file["purpose"] == "batch_output"
        listed = client.get("/v1/batches").json()
        assert listed["object"] == "list" and listed["data"][0]["id"] == batch["id"]
        assert listed["first_id"] == listed["last_id"] == batch["id"]
        assert listed["has_more"] is False


def chat_line_body(text: str) -> dict:
    return {"messages": [{"role": "user", "content": text}], "max_tokens": 4}


def test_request_errors_land_in_the_error_file_with_their_status(tmp_path):
    engine = FakeEngine(max_model_len=64)
    lines = [
        completion_line("ok"),
        completion_line("long", "x" * 200),
        completion_line("who", model="other-model"),
        completion_line("temp", temperature=-1),
    ]
    with batch_client(engine, tmp_path) as client:
        batch = wait_final(
            client, create(client, upload(client, lines)["id"], COMPLETIONS).json()["id"]
        )
        assert batch["request_counts"] == {"total": 4, "completed": 1, "failed": 3}
        errors = {e["custom_id"]: e["response"] for e in content(client, batch["error_file_id"])}
        assert errors["long"]["status_code"] == 400
        assert errors["long"]["body"]["error"]["code"] == "context_length_exceeded"
        assert errors["who"]["status_code"] == 404
        assert errors["who"]["body"]["error"]["code"] == "model_not_found"
        assert errors["temp"]["status_code"] == 400
        assert errors["temp"]["body"]["error"]["param"] == "temperature"


@pytest.mark.parametrize(
    "fields,status,param",
    [
        ({"endpoint": "/v1/embeddings"}, 400, "endpoint"),
        ({"completion_window": "1h"}, 400, "completion_window"),
        ({"metadata": {str(i): "v" for i in range(17)}}, 400, "metadata"),
        ({"metadata": {"k": "v" * 513}}, 400, "metadata"),
        ({"input_file_id": "file-missing"}, 404, "input_file_id"),
    ],
)
def test_bad_batch_requests_are_refused_with_openai_errors(tmp_path, fields, status, param):
    with batch_client(FakeEngine(), tmp_path) as client:
        file = upload(client, [chat_line("a")])
        r = create(client, fields.pop("input_file_id", file["id"]), **fields)
        assert r.status_code == status, r.text
        error = r.json()["error"]
        assert error["param"] == param and error["message"]


def test_unknown_ids_wrong_purpose_and_limits(tmp_path):
    with batch_client(FakeEngine(), tmp_path) as client:
        assert client.get("/v1/batches").json() == {
            "object": "list",
            "data": [],
            "first_id": None,
            "last_id": None,
            "has_more": False,
        }
        for path in ("/v1/batches/batch_x", "/v1/files/file-x", "/v1/files/file-x/content"):
            r = client.get(path)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        assert client.post("/v1/batches/batch_x/cancel").status_code == 404
        r = client.post(
            "/v1/files", files={"file": ("a.jsonl", b"{}\n")}, data={"purpose": "fine-tune"}
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"
        r = client.post("/v1/files", files={"file": ("a.jsonl", b"")}, data={"purpose": "batch"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "empty_file"
        r = client.post("/v1/files", data={"purpose": "batch"})
        assert r.status_code == 400 and "file" in r.json()["error"]["message"]
        assert client.get("/v1/batches?limit=0").status_code == 400
        assert not (tmp_path / "files").exists() or not any((tmp_path / "files").iterdir())


def test_uploads_have_their_own_size_limit(tmp_path):
    with batch_client(FakeEngine(), tmp_path, batch_max_file_mib=0.01, max_body_mib=0.005) as c:
        big = ("\n".join(chat_line(f"r{i}") for i in range(200))).encode()
        assert 0.01 * 2**20 < len(big)
        r = c.post("/v1/files", files={"file": ("a.jsonl", big)}, data={"purpose": "batch"})
        assert r.status_code == 413 and "--batch-max-file-mib" in r.json()["error"]["message"]
        fits = ("\n".join(chat_line(f"r{i}") for i in range(60))).encode()
        assert 0.005 * 2**20 < len(fits) < 0.01 * 2**20
        r = c.post("/v1/files", files={"file": ("a.jsonl", fits)}, data={"purpose": "batch"})
        assert r.status_code == 200
        r = c.post("/v1/chat/completions", json=chat_line_body("x" * 8000))
        assert r.status_code == 413 and "--max-body-mib" in r.json()["error"]["message"]


def test_cancel_ends_the_batch_with_every_line_accounted_for(tmp_path):
    engine = FakeEngine(step_delay_s=0.02)
    with batch_client(engine, tmp_path, batch_concurrency=1) as client:
        file = upload(client, [chat_line(f"r{i}") for i in range(20)])
        batch_id = create(client, file["id"]).json()["id"]
        deadline = time.monotonic() + 10
        while client.get(f"/v1/batches/{batch_id}").json()["request_counts"]["completed"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        r = client.post(f"/v1/batches/{batch_id}/cancel")
        assert r.status_code == 200 and r.json()["status"] in ("cancelling", "cancelled")
        assert r.json()["cancelling_at"] is not None
        batch = wait_final(client, batch_id)
        assert batch["status"] == "cancelled" and batch["cancelled_at"] is not None
        counts = batch["request_counts"]
        assert counts["total"] == 20 and counts["completed"] + counts["failed"] == 20
        assert 2 <= counts["completed"] < 20
        records = content(client, batch["output_file_id"]) + content(client, batch["error_file_id"])
        assert sorted(r["custom_id"] for r in records) == sorted(f"r{i}" for i in range(20))
        assert {r["error"]["code"] for r in records if r["error"]} == {"batch_cancelled"}
        again = client.post(f"/v1/batches/{batch_id}/cancel")
        assert again.status_code == 200 and again.json()["status"] == "cancelled"


def test_a_finished_batch_cannot_be_cancelled(tmp_path):
    with batch_client(FakeEngine(), tmp_path) as client:
        batch_id = create(client, upload(client, [chat_line("a")])["id"]).json()["id"]
        wait_final(client, batch_id)
        r = client.post(f"/v1/batches/{batch_id}/cancel")
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_status"


def test_keys_see_only_their_own_files_and_batches_and_lines_run_as_them(tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text(
        '[keys.alice]\nkey = "sk-alice"\nmodels = ["fake-model"]\n'
        '[keys.bob]\nkey = "sk-bob"\nmodels = ["other"]\n'
        '[keys.root]\nkey = "sk-root"\nadmin = true\n'
    )
    alice = {"Authorization": "Bearer sk-alice"}
    bob = {"Authorization": "Bearer sk-bob"}
    root = {"Authorization": "Bearer sk-root"}
    with batch_client(FakeEngine(), tmp_path / "state", keys=str(keys)) as client:
        assert client.get("/v1/batches").status_code == 401
        a_file = upload(client, [chat_line("a")], headers=alice)
        assert client.get(f"/v1/files/{a_file['id']}", headers=bob).status_code == 404
        assert create(client, a_file["id"], headers=bob).status_code == 404
        a_batch = create(client, a_file["id"], headers=alice).json()
        b_file = upload(client, [chat_line("b")], headers=bob)
        b_batch = create(client, b_file["id"], headers=bob).json()
        assert client.get(f"/v1/batches/{a_batch['id']}", headers=bob).status_code == 404
        assert [b["id"] for b in client.get("/v1/batches", headers=alice).json()["data"]] == [
            a_batch["id"]
        ]
        assert len(client.get("/v1/batches", headers=root).json()["data"]) == 2
        done_a = wait_final(client, a_batch["id"], headers=alice)
        done_b = wait_final(client, b_batch["id"], headers=bob)
        assert done_a["request_counts"]["completed"] == 1
        # bob's key may not use the served model: his line fails as his request would.
        assert done_b["request_counts"]["failed"] == 1
        [error] = content(client, done_b["error_file_id"], headers=bob)
        assert error["response"]["status_code"] == 403
        assert client.get(f"/v1/files/{done_b['error_file_id']}", headers=alice).status_code == 404


def test_servers_sharing_a_state_dir_run_each_line_once(tmp_path):
    first, second = FakeEngine(step_delay_s=0.002), FakeEngine(step_delay_s=0.002)
    with batch_client(first, tmp_path) as a, batch_client(second, tmp_path) as b:
        batch_id = create(b, upload(b, [chat_line(f"r{i}") for i in range(10)])["id"]).json()["id"]
        batch = wait_final(a, batch_id)
        assert batch["request_counts"]["completed"] == 10
        assert len(first.calls) + len(second.calls) == 10
        assert min(len(first.calls), len(second.calls)) == 0  # one runner holds the lock
