"""The Batch API over a real `tokenmill serve`, driven by the openai SDK; a kill -9 in the
middle of a batch; and `tokenmill batch` offline. Minutes: run with `make test-batch`.

The tests run in file order and share one state directory; the kill test starts its own
servers on it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import openai
import pytest

from tests.e2e.conftest import ServerProcess, start_server, tokenmill_command

pytestmark = pytest.mark.slow
BATCH_TIMEOUT_S = 300


def chat_line(custom_id: str, text: str, max_tokens: int = 6) -> dict:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"messages": [{"role": "user", "content": text}], "max_tokens": max_tokens},
    }


def jsonl(rows: list) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def wait_final(client: openai.OpenAI, batch_id: str, timeout_s: float = BATCH_TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}: {batch}"
        time.sleep(0.5)


def file_lines(client: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines() if x]


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("batch-state")


@pytest.fixture(scope="module")
def batch_server(tmp_path_factory, state_dir: Path):
    srv = start_server(
        tmp_path_factory,
        "batch",
        "--state-dir",
        str(state_dir),
        "--max-num-seqs",
        "4",
        "--batch-concurrency",
        "3",
    )
    yield srv
    assert srv.stop() == 0, srv.log()


def test_batch_round_trip_with_the_openai_sdk(batch_server: ServerProcess):
    client = batch_server.client()
    rows = [chat_line(f"q{i}", f"Say {i}.") for i in range(6)]
    rows.insert(2, b'{"custom_id": "broken", "method": "POST", "url": ')  # not JSON
    rows.insert(4, {**chat_line("bad-body", "x"), "body": {"messages": "not a list"}})
    uploaded = client.files.create(file=("requests.jsonl", jsonl(rows)), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes == len(jsonl(rows))
    assert client.files.retrieve(uploaded.id).filename == "requests.jsonl"
    assert client.files.content(uploaded.id).content == jsonl(rows)

    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert batch.status in ("validating", "in_progress")
    batch = wait_final(client, batch.id)

    assert batch.status == "completed", batch
    assert (batch.request_counts.total, batch.request_counts.completed) == (8, 6)
    assert batch.request_counts.failed == 2
    outputs = file_lines(client, batch.output_file_id)
    errors = file_lines(client, batch.error_file_id)
    assert sorted(o["custom_id"] for o in outputs) == [f"q{i}" for i in range(6)]
    for out in outputs:
        assert out["response"]["status_code"] == 200 and out["error"] is None
        assert out["response"]["body"]["choices"][0]["message"]["content"]
    by_id = {e["custom_id"]: e for e in errors}
    assert set(by_id) == {"broken", "bad-body"}, errors  # custom_id salvaged from bad JSON
    assert "not valid JSON" in by_id["broken"]["error"]["message"]
    assert by_id["broken"]["response"] is None
    assert by_id["bad-body"]["response"]["status_code"] == 400
    assert batch.id in [b.id for b in client.batches.list(limit=10).data]


def test_cancel_and_unknown_ids(batch_server: ServerProcess):
    client = batch_server.client()
    rows = [chat_line(f"c{i}", "Count slowly to fifty.", max_tokens=64) for i in range(40)]
    uploaded = client.files.create(file=("many.jsonl", jsonl(rows)), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert client.batches.cancel(batch.id).status in ("cancelling", "cancelled")
    batch = wait_final(client, batch.id)
    assert batch.status == "cancelled"
    counts = batch.request_counts
    assert counts.total == 40 and counts.completed + counts.failed == 40
    errors = file_lines(client, batch.error_file_id)
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    assert len(errors) == counts.failed > 0
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_does_not_exist")
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve("file-does-not-exist")


def test_kill_9_mid_batch_resumes_with_one_result_per_line(tmp_path_factory, tmp_path: Path):
    """Kill -9 while a batch runs, restart on the same state directory: it finishes, and
    every input line has exactly one output or error line."""
    state = tmp_path / "state"
    flags = ("--state-dir", str(state), "--max-num-seqs", "4", "--batch-concurrency", "4")
    n = 30
    rows = [chat_line(f"k{i}", f"Name a colour, {i}.", max_tokens=12) for i in range(n)]
    rows.insert(7, b"{oops")
    first = start_server(tmp_path_factory, "kill1", *flags)
    try:
        client = first.client()
        uploaded = client.files.create(file=("k.jsonl", jsonl(rows)), purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        deadline = time.monotonic() + BATCH_TIMEOUT_S
        while client.batches.retrieve(batch.id).request_counts.completed < 5:
            assert time.monotonic() < deadline, first.log()
            time.sleep(0.2)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
    finally:
        first.stop()
    done_at_kill = None
    second = start_server(tmp_path_factory, "kill2", *flags)
    try:
        client = second.client()
        done_at_kill = client.batches.retrieve(batch.id).request_counts
        assert done_at_kill.completed + done_at_kill.failed < n + 1, "finished before the kill"
        final = wait_final(client, batch.id)
        outputs = file_lines(client, final.output_file_id)
        errors = file_lines(client, final.error_file_id)
    finally:
        assert second.stop() == 0, second.log()
    assert final.status == "completed", final
    ids = [o["custom_id"] for o in outputs]
    assert sorted(ids) == sorted(f"k{i}" for i in range(n)), "lost or repeated outputs"
    assert len(errors) == 1 and errors[0]["custom_id"] is None
    assert (final.request_counts.completed, final.request_counts.failed) == (n, 1)


def test_offline_batch_command(tmp_path: Path):
    rows = [chat_line("a", "Hi"), b"[1, 2]", {**chat_line("b", "Hi"), "url": "/v1/embeddings"}]
    rows.append(
        {
            "custom_id": "c",
            "method": "POST",
            "url": "/v1/completions",
            "body": {"prompt": "Once upon", "max_tokens": 4},
        }
    )
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_bytes(jsonl(rows))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENMILL_")}
    proc = subprocess.run(
        [*tokenmill_command(), "batch", str(src), "-o", str(out), "--max-num-seqs", "2"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "4 requests, 2 succeeded, 2 failed" in proc.stderr
    assert "batch: 100%" in proc.stderr  # the progress bar
    results = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["custom_id"] for r in results] == ["a", None, "b", "c"]  # input order
    assert results[0]["response"]["body"]["object"] == "chat.completion"
    assert results[3]["response"]["body"]["object"] == "text_completion"
    assert results[1]["error"]["code"] and "url" in results[2]["error"]["message"]


def test_offline_batch_rejects_a_missing_input(tmp_path: Path):
    proc = subprocess.run(
        [*tokenmill_command(), "batch", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "o")],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "cannot read" in proc.stderr, proc.stderr
