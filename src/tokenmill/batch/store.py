"""Durable Batch API state: SQLite for files, batches and per-line results; file bytes on disk.

Crash safety rests on two rules. A line's result, its done mark and the batch's counters
change in one transaction, and only while the line is not done yet, so a line that ran
twice (in flight at a crash, run again after) is recorded once. Output and error files
are assembled from those rows, under ids derived from the batch's, so assembling again
after a crash rewrites the same files; the batch reaches its final status in the same
transaction that registers them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from tokenmill.batch.records import (
    BatchRecord,
    FileRecord,
    PendingLine,
)
from tokenmill.batch.schema import SCHEMA, batch_from_row, plain
from tokenmill.batch.status import BatchStatus, check_transition
from tokenmill.files import write_atomically
from tokenmill.gateway.call import Caller, Usage

DB_NAME = "batches.sqlite3"
# A line as load_lines takes it: line number, custom_id, request JSON or None, and the
# error result of a malformed line (None for a request).
LoadedLine = tuple[int, str | None, str | None, dict[str, Any] | None]


class BatchStore:
    """Files and batches under `state_dir`. Thread-safe (one connection behind a lock);
    the async server calls it through `AsyncBatchStore`, off the event loop."""

    def __init__(self, state_dir: Path, clock: Callable[[], float] = time.time):
        self.state_dir = Path(state_dir)
        self.files_dir = self.state_dir / "files"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            self.state_dir / DB_NAME, isolation_level=None, check_same_thread=False, timeout=30
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    @staticmethod
    def exists(state_dir: Path) -> bool:
        return (Path(state_dir) / DB_NAME).exists()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def now(self) -> int:
        return int(self._clock())

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: other processes wait, never interleave)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- files ---------------------------------------------------------------------------

    def add_file(self, owner: str, filename: str, purpose: str, source: IO[bytes]) -> FileRecord:
        """Copies `source` into the store (synced to disk), then registers it."""
        file_id = f"file-{uuid.uuid4().hex}"
        path = self.files_dir / f"{file_id}.jsonl"
        size = write_atomically(path, lambda out: shutil.copyfileobj(source, out, 2**20))
        record = FileRecord(file_id, owner, filename, purpose, size, self.now(), str(path))
        with self._write() as db:
            db.execute("INSERT INTO files VALUES (?,?,?,?,?,?,?)", dataclasses.astuple(record))
        return record

    def get_file(self, file_id: str) -> FileRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM files WHERE id=?", (file_id,)).fetchone()
        return FileRecord(**dict(row)) if row else None

    # -- batches -------------------------------------------------------------------------

    def create_batch(
        self,
        caller: Caller,
        endpoint: str,
        input_file_id: str,
        completion_window_s: int,
        completion_window: str,
        metadata: dict[str, str] | None,
    ) -> BatchRecord:
        """A new batch in `validating`; the runner reads its file next."""
        now = self.now()
        batch_id = f"batch_{uuid.uuid4().hex}"
        with self._write() as db:
            db.execute(
                "INSERT INTO batches (id, owner, caller, endpoint, input_file_id, "
                "completion_window, status, created_at, expires_at, metadata) "
                "VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    batch_id,
                    caller.name,
                    json.dumps(dataclasses.asdict(caller)),
                    endpoint,
                    input_file_id,
                    completion_window,
                    BatchStatus.VALIDATING.value,
                    now,
                    now + completion_window_s,
                    json.dumps(metadata) if metadata is not None else None,
                ),
            )
        return self.get_batch(batch_id)

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM batches WHERE id=?", (batch_id,)).fetchone()
        return batch_from_row(row) if row else None

    def list_batches(
        self, owner: str | None, after: str | None, limit: int
    ) -> tuple[list[BatchRecord], bool]:
        """Newest first, after the batch `after` (a cursor), `owner`'s only unless None.
        Returns the page and whether more follow."""
        where, args = ["1=1"], []
        if owner is not None:
            where.append("owner=?")
            args.append(owner)
        if after is not None:
            where.append("rowid < COALESCE((SELECT rowid FROM batches WHERE id=?), -1)")
            args.append(after)
        query = f"SELECT * FROM batches WHERE {' AND '.join(where)} ORDER BY rowid DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(query, (*args, limit + 1)).fetchall()
        return [batch_from_row(r) for r in rows[:limit]], len(rows) > limit

    def active_batches(self) -> list[BatchRecord]:
        """Batches not in a final status, oldest first."""
        finals = tuple(s.value for s in BatchStatus if s.is_final)
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM batches WHERE status NOT IN ({','.join('?' * len(finals))}) "
                "ORDER BY rowid",
                finals,
            ).fetchall()
        return [batch_from_row(r) for r in rows]

    def set_status(self, batch_id: str, new: BatchStatus, **fields: Any) -> BatchRecord:
        """Moves the batch to `new` (InvalidTransition if the machine forbids it), stamping
        the time and setting `fields` (outcome, errors) in the same transaction."""
        with self._write() as db:
            self._transition(db, batch_id, new, fields)
        return self.get_batch(batch_id)

    def _transition(
        self, db: sqlite3.Connection, batch_id: str, new: BatchStatus, fields: dict[str, Any]
    ) -> None:
        row = db.execute(
            "SELECT status, timestamps FROM batches WHERE id=?", (batch_id,)
        ).fetchone()
        if row is None:
            raise KeyError(batch_id)
        check_transition(BatchStatus(row["status"]), new)
        stamps = json.loads(row["timestamps"])
        stamps[new.timestamp_field] = self.now()
        values = {"status": new.value, "timestamps": json.dumps(stamps)}
        for name, value in fields.items():
            values[name] = json.dumps(value) if name == "errors" else plain(value)
        assignments = ", ".join(f"{name}=?" for name in values)
        db.execute(f"UPDATE batches SET {assignments} WHERE id=?", (*values.values(), batch_id))

    # -- lines ---------------------------------------------------------------------------

    def load_lines(self, batch_id: str, lines: Iterable[LoadedLine], model: str | None) -> None:
        """Stores the batch's parsed input lines and moves it to in_progress, in one
        transaction. Malformed lines are stored done, with their error result."""
        with self._write() as db:
            total = failed = 0
            for line_no, custom_id, request, error in lines:
                total += 1
                failed += error is not None
                db.execute(
                    "INSERT INTO lines VALUES (?,?,?,?,?,?,?)",
                    (
                        batch_id,
                        line_no,
                        custom_id,
                        request,
                        int(error is not None),
                        0 if error is not None else None,
                        json.dumps(error) if error is not None else None,
                    ),
                )
            db.execute(
                "UPDATE batches SET total=?, failed=?, model=? WHERE id=?",
                (total, failed, model, batch_id),
            )
            self._transition(db, batch_id, BatchStatus.IN_PROGRESS, {})

    def pending_lines(self, batch_id: str, after_line_no: int, limit: int) -> list[PendingLine]:
        with self._lock:
            rows = self._db.execute(
                "SELECT line_no, request FROM lines WHERE batch_id=? AND done=0 AND line_no>? "
                "ORDER BY line_no LIMIT ?",
                (batch_id, after_line_no, limit),
            ).fetchall()
        return [PendingLine(r["line_no"], r["request"]) for r in rows]

    def record_line(
        self, batch_id: str, line_no: int, ok: bool, record: dict[str, Any], usage: Usage
    ) -> bool:
        """Stores a line's result, its done mark and the batch's counters at once. False
        (and nothing changed) if the line was already done."""
        with self._write() as db:
            cur = db.execute(
                "UPDATE lines SET done=1, ok=?, result=? WHERE batch_id=? AND line_no=? AND done=0",
                (int(ok), json.dumps(record), batch_id, line_no),
            )
            if cur.rowcount != 1:
                return False
            db.execute(
                "UPDATE batches SET completed=completed+?, failed=failed+?, "
                "input_tokens=input_tokens+?, output_tokens=output_tokens+?, "
                "cached_tokens=cached_tokens+? WHERE id=?",
                (
                    int(ok),
                    int(not ok),
                    usage.prompt_tokens,
                    usage.completion_tokens,
                    usage.cached_tokens,
                    batch_id,
                ),
            )
        return True

    def close_remaining(
        self, batch_id: str, make_record: Callable[[str | None], dict[str, Any]]
    ) -> int:
        """Ends every line not done yet with the error `make_record(custom_id)` (expired or
        cancelled batches), counting them failed. Returns how many."""
        with self._write() as db:
            rows = db.execute(
                "SELECT line_no, custom_id FROM lines WHERE batch_id=? AND done=0", (batch_id,)
            ).fetchall()
            for row in rows:
                db.execute(
                    "UPDATE lines SET done=1, ok=0, result=? WHERE batch_id=? AND line_no=?",
                    (json.dumps(make_record(row["custom_id"])), batch_id, row["line_no"]),
                )
            db.execute("UPDATE batches SET failed=failed+? WHERE id=?", (len(rows), batch_id))
        return len(rows)

    def finish(self, batch_id: str, final: BatchStatus) -> BatchRecord:
        """Assembles the output and error files from the recorded lines (in input order),
        then registers them and moves the batch to `final` in one transaction."""
        batch = self.get_batch(batch_id)
        assert batch is not None
        files = {}
        for ok, purpose in ((True, "output"), (False, "error")):
            file_id = "file-" + hashlib.sha256(f"{batch_id}:{purpose}".encode()).hexdigest()[:32]
            path = self.files_dir / f"{file_id}.jsonl"
            size = write_atomically(path, lambda out, ok=ok: self._write_results(batch_id, ok, out))
            if size:
                name = f"{batch_id}_{purpose}.jsonl"
                files[purpose] = FileRecord(
                    file_id, batch.owner, name, "batch_output", size, self.now(), str(path)
                )
            else:
                path.unlink()
        with self._write() as db:
            for record in files.values():
                db.execute(
                    "INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?)",
                    dataclasses.astuple(record),
                )
            fields = {
                "output_file_id": files["output"].id if "output" in files else None,
                "error_file_id": files["error"].id if "error" in files else None,
            }
            self._transition(db, batch_id, final, fields)
        return self.get_batch(batch_id)

    def _write_results(self, batch_id: str, ok: bool, out: IO[bytes]) -> None:
        with self._lock:
            rows = self._db.execute(
                "SELECT result FROM lines WHERE batch_id=? AND done=1 AND ok=? ORDER BY line_no",
                (batch_id, int(ok)),
            )
            for row in rows:
                out.write(row["result"].encode() + b"\n")
