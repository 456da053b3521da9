"""Feedback on answers, stored durably in SQLite with what produced each answer.

Calls are remembered in memory (the last MAX_CALLS, by completion id) with their model
version, who served them, and the cache and guardrail decisions; nothing is written
per call. A rating is written, with that context copied into its row, before the
client gets its answer (WAL, synchronous=FULL): a 200 means it is on disk. Ratings of
calls older than the memory window, or from before a restart, are refused (404).
"""

from __future__ import annotations

import collections
import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field

from tokenmill.errors import ConfigError, InvalidRequestError, TokenmillError

MAX_CALLS = 100_000
MAX_COMMENT_CHARS = 4000
RATINGS = range(-1, 6)
"""-1, 0, 1 (thumbs) or 1 to 5 (stars)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    completion_id TEXT NOT NULL,
    rating INTEGER NOT NULL,
    comment TEXT,
    caller TEXT NOT NULL,
    model TEXT NOT NULL,
    model_version TEXT NOT NULL,
    served_by TEXT,
    decisions TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_created ON feedback (created);
"""


class CompletionNotFoundError(TokenmillError):
    """Feedback names a completion this server does not remember (HTTP 404)."""

    status_code = 404
    error_type = "invalid_request_error"
    default_code = "completion_not_found"


@dataclass(frozen=True)
class CallRecord:
    """What produced one answer, kept so a later rating can be linked to it."""

    completion_id: str
    model: str
    model_version: str
    caller: str
    served_by: str | None = None
    decisions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Feedback:
    """One stored rating with its call's context."""

    id: int
    created: float
    completion_id: str
    rating: int
    comment: str | None
    caller: str
    model: str
    model_version: str
    served_by: str | None
    decisions: dict[str, str]

    def to_dict(self) -> dict:
        return asdict(self)


class FeedbackStore:
    """The SQLite file and the memory of recent calls. Thread-safe; `add`, `since` and
    `close` do disk I/O: call them off the event loop."""

    def __init__(self, path: str, max_calls: int = MAX_CALLS):
        self.path = path
        self.max_calls = max_calls
        self._calls: collections.OrderedDict[str, CallRecord] = collections.OrderedDict()
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigError(
                f"cannot open the feedback database {path}: {exc}", setting="feedback_db"
            ) from None

    def remember(self, call: CallRecord) -> None:
        """Keeps `call` for later ratings, forgetting the oldest past `max_calls`."""
        with self._lock:
            self._calls[call.completion_id] = call
            while len(self._calls) > self.max_calls:
                self._calls.popitem(last=False)

    def add(self, completion_id: str, rating: int, comment: str | None, caller: str) -> Feedback:
        """Stores a rating of a remembered call made by `caller` (admins may rate any).
        InvalidRequestError for a bad rating or comment, CompletionNotFoundError for a
        completion not remembered or not the caller's."""
        if isinstance(rating, bool) or not isinstance(rating, int) or rating not in RATINGS:
            raise InvalidRequestError(
                f"rating must be -1, 0 or 1 (thumbs) or 1 to 5 (stars); got {rating!r}.",
                param="rating",
            )
        if comment is not None and len(comment) > MAX_COMMENT_CHARS:
            raise InvalidRequestError(
                f"comment is {len(comment)} characters; at most {MAX_COMMENT_CHARS} are kept. "
                "Shorten it.",
                param="comment",
            )
        with self._lock:
            call = self._calls.get(completion_id)
        if call is None or (caller is not None and call.caller != caller):
            raise CompletionNotFoundError(
                f"No completion {completion_id!r} to rate: ids are those of this server's "
                f"responses (the `id` field), for the last {self.max_calls} calls since it "
                "started, made with the same API key.",
                param="id",
            )
        created = time.time()
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO feedback (created, completion_id, rating, comment, caller, model, "
                "model_version, served_by, decisions) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    created,
                    completion_id,
                    rating,
                    comment,
                    call.caller,
                    call.model,
                    call.model_version,
                    call.served_by,
                    json.dumps(call.decisions, sort_keys=True),
                ),
            )
        return Feedback(
            cursor.lastrowid,
            created,
            completion_id,
            rating,
            comment,
            call.caller,
            call.model,
            call.model_version,
            call.served_by,
            dict(call.decisions),
        )

    def since(self, created_after: float = 0.0, limit: int | None = None) -> list[Feedback]:
        """Ratings stored after `created_after` (Unix seconds), oldest first."""
        sql = "SELECT * FROM feedback WHERE created > ? ORDER BY id"
        params: tuple = (created_after,)
        if limit is not None:
            sql += " LIMIT ?"
            params += (limit,)
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [Feedback(*row[:-1], json.loads(row[-1])) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
