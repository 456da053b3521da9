"""`tokenmill serve` with metrics, drift (the real sentence encoder), feedback and JSON
logs, on the default model: the numbers match the traffic, ids reach the log."""

from __future__ import annotations

import json
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import start_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    db = tmp_path_factory.mktemp("feedback") / "feedback.db"
    srv = start_server(
        tmp_path_factory,
        "watched",
        "--drift",
        "true",
        "--drift-reference",
        "40",
        "--drift-window",
        "40",
        "--feedback-db",
        str(db),
        "--log-format",
        "json",
    )
    yield srv
    assert srv.stop() == 0, srv.log()


def samples(srv) -> dict:
    text = srv.http.get("/metrics").text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "model_name")))
            out[key] = out.get(key, 0.0) + s.value
    return out


def test_metrics_drift_feedback_and_logs_on_a_real_server(watched):
    prompts = ["Name a river.", "Name a mountain.", "Name a city."]
    usages, ids = [], []
    for i, prompt in enumerate(prompts):
        r = watched.http.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": prompt}], "max_tokens": 8},
            headers={"X-Request-Id": f"e2e-req-{i}"},
        )
        assert r.status_code == 200 and r.headers["x-request-id"] == f"e2e-req-{i}"
        usages.append(r.json()["usage"])
        ids.append(r.json()["id"])
    m = samples(watched)
    assert m[("tokenmill:prompt_tokens_total", ())] == sum(u["prompt_tokens"] for u in usages)
    assert m[("tokenmill:generation_tokens_total", ())] == sum(
        u["completion_tokens"] for u in usages
    )
    assert sum(v for (n, _), v in m.items() if n == "tokenmill:request_success_total") == 3
    assert m[("tokenmill:request_queue_time_seconds_count", ())] == 3
    assert m[("tokenmill:prefix_cache_queries_total", ())] > 0
    assert m[("tokenmill:num_requests_running", ())] == 0
    # Drift: the real encoder embeds the three prompts off the request path.
    deadline = time.monotonic() + 60
    while True:
        report = watched.http.get("/v1/monitoring/drift").json()
        if report["feed"]["observed"] == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert report["feed"]["observed"] == 3 and report["feed"]["failed"] == 0
    assert report["status"] == "collecting" and report["reference_size"] == 3
    stored = watched.http.post("/v1/feedback", json={"id": ids[0], "rating": 1})
    assert stored.status_code == 200 and stored.json()["model_version"] == "1"
    lines = [json.loads(line) for line in watched.log().splitlines() if line.startswith("{")]
    ours = [line for line in lines if line["request_id"] == "e2e-req-0"]
    assert any(ids[0] in line["message"] for line in ours)
    assert not any("Name a river" in line["message"] for line in lines)
