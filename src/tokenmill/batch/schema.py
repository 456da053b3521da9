"""The batch store's SQLite tables, and how a row becomes a record."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from tokenmill.batch.records import BatchRecord, RequestCounts, TokenUsage
from tokenmill.batch.status import BatchStatus

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, filename TEXT NOT NULL, purpose TEXT NOT NULL,
    bytes INTEGER NOT NULL, created_at INTEGER NOT NULL, path TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, caller TEXT NOT NULL, endpoint TEXT NOT NULL,
    input_file_id TEXT NOT NULL, completion_window TEXT NOT NULL, status TEXT NOT NULL,
    outcome TEXT, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, metadata TEXT,
    model TEXT, errors TEXT, timestamps TEXT NOT NULL DEFAULT '{}',
    total INTEGER NOT NULL DEFAULT 0, completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0, input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0, cached_tokens INTEGER NOT NULL DEFAULT 0,
    output_file_id TEXT, error_file_id TEXT);
CREATE TABLE IF NOT EXISTS lines (
    batch_id TEXT NOT NULL, line_no INTEGER NOT NULL, custom_id TEXT, request TEXT,
    done INTEGER NOT NULL DEFAULT 0, ok INTEGER, result TEXT,
    PRIMARY KEY (batch_id, line_no));
CREATE INDEX IF NOT EXISTS lines_by_state ON lines (batch_id, done, line_no);
"""


def plain(value: Any) -> Any:
    return value.value if isinstance(value, BatchStatus) else value


def batch_from_row(row: sqlite3.Row) -> BatchRecord:
    return BatchRecord(
        id=row["id"],
        owner=row["owner"],
        caller=json.loads(row["caller"]),
        endpoint=row["endpoint"],
        input_file_id=row["input_file_id"],
        completion_window=row["completion_window"],
        status=BatchStatus(row["status"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        metadata=json.loads(row["metadata"]) if row["metadata"] else None,
        model=row["model"],
        errors=json.loads(row["errors"]) if row["errors"] else None,
        timestamps=json.loads(row["timestamps"]),
        counts=RequestCounts(row["total"], row["completed"], row["failed"]),
        usage=TokenUsage(row["input_tokens"], row["output_tokens"], row["cached_tokens"]),
        output_file_id=row["output_file_id"],
        error_file_id=row["error_file_id"],
        outcome=BatchStatus(row["outcome"]) if row["outcome"] else None,
    )
