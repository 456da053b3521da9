"""Feedback: stored durably in SQLite with the call's model version and decisions;
rating metrics; admin-only listing; JSONL export."""

from __future__ import annotations

import json
import sqlite3

from tests.unit.gateway.conftest import chat, gateway_client
from tests.unit.observability.test_metrics import scrape_with, value
from tests.unit.server.fake_engine import FakeEngine
from tokenmill.cli.main import main


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_feedback_is_404_when_off():
    with gateway_client(FakeEngine()) as c:
        for r in (c.post("/v1/feedback", json={"id": "x", "rating": 1}), c.get("/v1/feedback")):
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_enabled"


def test_a_rating_is_on_disk_with_its_calls_context_and_counted(tmp_path):
    db = tmp_path / "feedback.db"
    with gateway_client(FakeEngine(), feedback_db=str(db)) as c:
        answer = c.post("/v1/chat/completions", json=chat(temperature=0)).json()
        r = c.post("/v1/feedback", json={"id": answer["id"], "rating": 5, "comment": "spot on"})
        assert r.status_code == 200, r.text
        stored = r.json()
        assert stored["model"] == "fake-model" and stored["model_version"] == "1"
        assert stored["decisions"]["cache"] == "miss" and stored["served_by"] == "local"
        c.post("/v1/feedback", json={"id": answer["id"], "rating": -1})
        samples = scrape_with(c, {})
        listed = c.get("/v1/feedback").json()["data"]
    labels = {"model_name": "fake-model", "model_version": "1"}
    assert value(samples, "tokenmill:feedback_ratings_total", rating="5", **labels) == 1
    assert value(samples, "tokenmill:feedback_ratings_total", rating="-1", **labels) == 1
    assert [f["rating"] for f in listed] == [5, -1]
    # Another connection (the server is gone) reads both rows back.
    rows = (
        sqlite3.connect(db)
        .execute(
            "SELECT completion_id, rating, comment, model_version, decisions FROM feedback ORDER BY id"
        )
        .fetchall()
    )
    assert rows[0][:4] == (answer["id"], 5, "spot on", "1")
    assert json.loads(rows[0][4])["cache"] == "miss"
    assert rows[1][1] == -1


def test_bad_feedback_gets_clear_errors(tmp_path):
    with gateway_client(FakeEngine(), feedback_db=str(tmp_path / "f.db")) as c:
        answer = c.post("/v1/chat/completions", json=chat(temperature=0.5)).json()
        bad_rating = c.post("/v1/feedback", json={"id": answer["id"], "rating": 7})
        unknown = c.post("/v1/feedback", json={"id": "chatcmpl-nope", "rating": 1})
        long_comment = c.post(
            "/v1/feedback", json={"id": answer["id"], "rating": 1, "comment": "x" * 5000}
        )
        bad_since = c.get("/v1/feedback", params={"since": "yesterday"})
    assert bad_rating.status_code == 400 and bad_rating.json()["error"]["param"] == "rating"
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "completion_not_found"
    assert long_comment.status_code == 400 and "4000" in long_comment.json()["error"]["message"]
    assert bad_since.status_code == 400 and bad_since.json()["error"]["param"] == "since"


def test_keys_rate_their_own_calls_and_only_admins_list(tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text(
        '[keys.alice]\nkey = "ka"\n[keys.bob]\nkey = "kb"\n[keys.ops]\nkey = "ko"\nadmin = true\n'
    )
    db = tmp_path / "f.db"
    with gateway_client(FakeEngine(), keys=str(keys), feedback_db=str(db)) as c:
        answer = c.post(
            "/v1/chat/completions", json=chat(temperature=0.5), headers=auth("ka")
        ).json()
        rate = {"id": answer["id"], "rating": 1}
        assert c.post("/v1/feedback", json=rate, headers=auth("kb")).status_code == 404
        assert c.post("/v1/feedback", json=rate).status_code == 401
        mine = c.post("/v1/feedback", json=rate, headers=auth("ka"))
        assert mine.status_code == 200 and mine.json()["caller"] == "alice"
        forbidden = c.get("/v1/feedback", headers=auth("ka"))
        assert forbidden.status_code == 403
        assert forbidden.json()["error"]["code"] == "admin_required"
        listed = c.get("/v1/feedback", headers=auth("ko")).json()["data"]
        later = c.get(
            "/v1/feedback", params={"since": "2999-01-01T00:00:00Z"}, headers=auth("ko")
        ).json()["data"]
    assert [f["completion_id"] for f in listed] == [answer["id"]] and later == []


def test_export_writes_jsonl(tmp_path, capsys):
    db = tmp_path / "f.db"
    with gateway_client(FakeEngine(), feedback_db=str(db)) as c:
        ids = [
            c.post("/v1/chat/completions", json=chat(temperature=0.5)).json()["id"] for _ in "ab"
        ]
        for i, rating in zip(ids, (1, 0)):
            assert c.post("/v1/feedback", json={"id": i, "rating": rating}).status_code == 200
    out = tmp_path / "ratings.jsonl"
    assert main(["feedback", "export", "--db", str(db), "-o", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(x["completion_id"], x["rating"]) for x in lines] == list(zip(ids, (1, 0)))
    assert main(["feedback", "export", "--db", str(tmp_path / "missing.db")]) == 2
    assert "no such feedback database" in capsys.readouterr().err
