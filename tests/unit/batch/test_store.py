"""The batch store: one result per line whatever happens, files assembled from the rows."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tests.unit.batch.factories import CHAT, chat_line, read_jsonl
from tokenmill.batch.lines import RequestLine, line_error_record, parse_line
from tokenmill.batch.status import BatchStatus, InvalidTransition
from tokenmill.batch.store import BatchStore
from tokenmill.gateway.call import Caller, Usage


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_store(tmp_path, clock=None) -> BatchStore:
    return BatchStore(tmp_path / "state", clock=clock or Clock())


def loaded_batch(store: BatchStore, n: int, caller: Caller | None = None):
    """A batch in progress with `n` request lines and one malformed line (line n+1)."""
    caller = caller or Caller()
    content = "\n".join(chat_line(f"r{i}") for i in range(n)) + "\n{broken\n"
    file = store.add_file(caller.name, "in.jsonl", "batch", io.BytesIO(content.encode()))
    batch = store.create_batch(caller, CHAT, file.id, 86400, "24h", {"team": "a"})
    lines = [(i + 1, f"r{i}", parse_line(chat_line(f"r{i}")).to_json(), None) for i in range(n)]
    lines.append((n + 1, None, None, line_error_record(None, "invalid_json", "bad")))
    store.load_lines(batch.id, lines, "m")
    return store.get_batch(batch.id)


def result(custom_id: str) -> dict:
    return {"custom_id": custom_id, "response": {"status_code": 200}, "error": None}


def test_files_are_stored_whole_and_described(tmp_path):
    store = make_store(tmp_path)
    record = store.add_file("alice", "in.jsonl", "batch", io.BytesIO(b"abc\n"))
    assert record.bytes == 4 and record.id.startswith("file-")
    assert Path(record.path).read_bytes() == b"abc\n"
    assert store.get_file(record.id) == record
    assert store.get_file("file-nope") is None


def test_a_new_batch_validates_then_runs_with_its_malformed_lines_already_failed(tmp_path):
    store = make_store(tmp_path)
    batch = loaded_batch(store, 3)
    assert batch.status is BatchStatus.IN_PROGRESS and batch.model == "m"
    assert (batch.counts.total, batch.counts.completed, batch.counts.failed) == (4, 0, 1)
    assert batch.expires_at == batch.created_at + 86400
    assert batch.timestamps == {"in_progress_at": 1_000_000}
    assert batch.metadata == {"team": "a"}
    pending = store.pending_lines(batch.id, 0, 10)
    assert [p.line_no for p in pending] == [1, 2, 3]
    assert RequestLine.from_json(pending[0].request).custom_id == "r0"
    assert [p.line_no for p in store.pending_lines(batch.id, 1, 1)] == [2]


def test_a_line_is_recorded_once_even_if_it_ran_twice(tmp_path):
    store = make_store(tmp_path)
    batch = loaded_batch(store, 2)
    usage = Usage(prompt_tokens=10, completion_tokens=4, cached_tokens=2)
    assert store.record_line(batch.id, 1, True, result("r0"), usage)
    assert not store.record_line(batch.id, 1, False, result("again"), usage)
    after = store.get_batch(batch.id)
    assert (after.counts.completed, after.counts.failed) == (1, 1)
    assert (after.usage.input_tokens, after.usage.output_tokens, after.usage.cached_tokens) == (
        10,
        4,
        2,
    )
    assert [p.line_no for p in store.pending_lines(batch.id, 0, 10)] == [2]


def test_the_state_survives_reopening(tmp_path):
    store = make_store(tmp_path)
    batch = loaded_batch(store, 2)
    store.record_line(batch.id, 2, True, result("r1"), Usage())
    store.close()
    again = make_store(tmp_path)
    assert again.get_batch(batch.id).counts.completed == 1
    assert [p.line_no for p in again.pending_lines(batch.id, 0, 10)] == [1]


def test_finishing_assembles_both_files_in_input_order(tmp_path):
    store = make_store(tmp_path)
    batch = loaded_batch(store, 3)
    store.record_line(batch.id, 3, True, result("r2"), Usage())
    store.record_line(batch.id, 1, True, result("r0"), Usage())
    store.record_line(batch.id, 2, False, result("r1-failed"), Usage())
    store.set_status(batch.id, BatchStatus.FINALIZING, outcome=BatchStatus.COMPLETED)
    done = store.finish(batch.id, BatchStatus.COMPLETED)
    assert done.status is BatchStatus.COMPLETED
    assert set(done.timestamps) == {"in_progress_at", "finalizing_at", "completed_at"}
    output = store.get_file(done.output_file_id)
    errors = store.get_file(done.error_file_id)
    assert (output.purpose, output.owner) == ("batch_output", "anonymous")
    assert [r["custom_id"] for r in read_jsonl(Path(output.path).read_text())] == ["r0", "r2"]
    assert [r["custom_id"] for r in read_jsonl(Path(errors.path).read_text())] == [
        "r1-failed",
        None,
    ]
    # Finishing twice (a crash between writing the files and the commit) is refused by the
    # status machine, and rewrites nothing else.
    with pytest.raises(InvalidTransition):
        store.finish(batch.id, BatchStatus.COMPLETED)


def test_no_error_file_when_nothing_failed(tmp_path):
    store = make_store(tmp_path)
    content = chat_line("only") + "\n"
    file = store.add_file("a", "in.jsonl", "batch", io.BytesIO(content.encode()))
    batch = store.create_batch(Caller(), CHAT, file.id, 86400, "24h", None)
    store.load_lines(batch.id, [(1, "only", parse_line(content).to_json(), None)], None)
    store.record_line(batch.id, 1, True, result("only"), Usage())
    store.set_status(batch.id, BatchStatus.FINALIZING, outcome=BatchStatus.COMPLETED)
    done = store.finish(batch.id, BatchStatus.COMPLETED)
    assert done.output_file_id is not None and done.error_file_id is None


def test_closing_the_remaining_lines_fails_each_once(tmp_path):
    store = make_store(tmp_path)
    batch = loaded_batch(store, 3)
    store.record_line(batch.id, 2, True, result("r1"), Usage())
    store.set_status(batch.id, BatchStatus.CANCELLING)
    closed = store.close_remaining(batch.id, lambda cid: line_error_record(cid, "gone", "x"))
    assert closed == 2
    assert store.close_remaining(batch.id, lambda cid: line_error_record(cid, "gone", "x")) == 0
    done = store.finish(batch.id, BatchStatus.CANCELLED)
    assert (done.counts.total, done.counts.completed, done.counts.failed) == (4, 1, 3)
    errors = read_jsonl(Path(store.get_file(done.error_file_id).path).read_text())
    assert [(r["custom_id"], r["error"]["code"]) for r in errors] == [
        ("r0", "gone"),
        ("r2", "gone"),
        (None, "invalid_json"),
    ]


def test_listing_is_newest_first_per_owner_with_a_cursor(tmp_path):
    store = make_store(tmp_path)
    file = store.add_file("a", "in.jsonl", "batch", io.BytesIO(b"x\n"))
    alice, bob = Caller("alice"), Caller("bob")
    ids = [
        store.create_batch(alice if i % 2 == 0 else bob, CHAT, file.id, 60, "24h", None).id
        for i in range(5)
    ]
    page, more = store.list_batches("alice", None, 2)
    assert [b.id for b in page] == [ids[4], ids[2]] and more
    page, more = store.list_batches("alice", ids[2], 2)
    assert [b.id for b in page] == [ids[0]] and not more
    page, more = store.list_batches(None, None, 10)
    assert [b.id for b in page] == ids[::-1] and not more
    assert store.list_batches(None, "batch_unknown", 10) == ([], False)


def test_the_caller_is_kept_to_run_the_lines_as_it(tmp_path):
    store = make_store(tmp_path)
    caller = Caller("alice", models=("m",), rpm=5, tpm=100, authenticated=True)
    batch = loaded_batch(store, 1, caller)
    assert batch.owner == "alice"
    assert batch.caller == json.loads(json.dumps(caller.__dict__ | {"models": ["m"]}))
