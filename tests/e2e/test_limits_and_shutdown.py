"""A server with tight limits: a full queue gives 429, a slow request 408, schema-driven
fuzzing finds no 5xx, and SIGTERM with a request in flight finishes it and exits 0.

The tests run in file order; the last one stops the server.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ServerProcess, start_server

pytestmark = pytest.mark.slow
TIMEOUT_S = 5


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory):
    srv = start_server(
        tmp_path_factory,
        "limited",
        "--max-num-seqs",
        "1",
        "--max-queue",
        "1",
        "--request-timeout",
        str(TIMEOUT_S),
        "--shutdown-grace",
        "20",
    )
    yield srv
    srv.stop()


def wait_idle(server: ServerProcess, timeout_s: float = 15) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        stats = server.stats()
        if stats["num_running"] == 0 and stats["num_waiting"] == 0:
            return stats
        assert time.monotonic() < deadline, f"engine not idle: {stats}"
        time.sleep(0.05)


def test_full_queue_is_429_with_retry_after(limited: ServerProcess):
    # 16 tokens: the served two (one after the other) must finish inside the 5 s request
    # timeout even on a slow CPU, which counts their time in the queue too.
    body = {"prompt": "Count:", "max_tokens": 16, "ignore_eos": True}

    def post(_):
        with httpx.Client(base_url=limited.url, timeout=60) as http:
            return http.post("/v1/completions", json=body)

    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(post, range(4)))
    # One runs and one waits, however the arrivals interleave with the engine's steps (a
    # step only moves a request from waiting to running; none finishes 16 tokens before
    # the four have arrived): two are served and two refused.
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 429, 429], statuses
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error" and "limit 1" in error["message"]
    wait_idle(limited)


def test_request_past_the_timeout_is_408_and_aborted(limited: ServerProcess):
    started = time.monotonic()
    r = limited.http.post(
        "/v1/completions", json={"prompt": "Count:", "max_tokens": 4000, "ignore_eos": True}
    )
    elapsed = time.monotonic() - started
    assert r.status_code == 408, r.text
    assert f"{TIMEOUT_S} s" in r.json()["error"]["message"]
    assert TIMEOUT_S - 0.5 < elapsed < TIMEOUT_S + 5
    wait_idle(limited)


def test_schema_fuzzing_finds_no_server_error(limited: ServerProcess, tmp_path: Path):
    """A bounded schemathesis run over every operation of /openapi.json (loopback only)."""
    schemathesis = Path(sys.executable).parent / "schemathesis"
    report = tmp_path / "report.json"
    result = subprocess.run(
        [
            str(schemathesis),
            "run",
            f"{limited.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--max-time",
            "30",
            "--seed",
            "20250101",
            "--request-timeout",
            str(TIMEOUT_S + 10),
            "--generation-database",
            "none",
            "--report",
            "json",
            "--report-json-path",
            str(report),
            "--no-color",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Operations:" in result.stdout and "passed" in result.stdout
    assert report.exists() and json.loads(report.read_text())
    wait_idle(limited, timeout_s=30)


def test_sigterm_finishes_the_request_in_flight_and_exits_0(limited: ServerProcess):
    # 16 tokens: a slow CI CPU must still finish them inside the 5 s request timeout,
    # which would otherwise end the stream with a 408 error event.
    body = {"prompt": "Count:", "max_tokens": 16, "ignore_eos": True, "stream": True}
    events = []
    with limited.http.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        for line in lines:
            if line.startswith("data: "):
                events.append(line[len("data: ") :])
                break
        limited.proc.send_signal(signal.SIGTERM)
        events += [line[len("data: ") :] for line in lines if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "choices" in chunks[-1], chunks[-1]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert sum(len(c["choices"][0]["text"]) > 0 for c in chunks) > 1
    assert limited.proc.wait(timeout=30) == 0
    assert "draining" in limited.full_log()
