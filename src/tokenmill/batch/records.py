"""The rows the batch store keeps, as named types: a file, a batch, an input line."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tokenmill.batch.status import BatchStatus

FILE_PURPOSES = ("batch", "batch_output")


@dataclass(frozen=True)
class FileRecord:
    """An uploaded input file or an assembled output file. Its bytes live at `path`."""

    id: str
    owner: str
    """The caller's key name ("anonymous" without keys); others cannot see it."""
    filename: str
    purpose: str
    bytes: int
    created_at: int
    path: str


@dataclass(frozen=True)
class RequestCounts:
    total: int = 0
    completed: int = 0
    failed: int = 0

    @property
    def done(self) -> int:
        return self.completed + self.failed


@dataclass(frozen=True)
class TokenUsage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0


@dataclass(frozen=True)
class BatchRecord:
    """A batch as stored: OpenAI's fields plus who owns it and how its lines run."""

    id: str
    owner: str
    caller: dict[str, Any]
    """The creating caller's rights (name, models, rpm, tpm): its lines run as it."""
    endpoint: str
    input_file_id: str
    completion_window: str
    status: BatchStatus
    created_at: int
    expires_at: int
    metadata: dict[str, str] | None = None
    model: str | None = None
    errors: list[dict[str, Any]] | None = None
    """File-level problems that failed the batch (OpenAI's `errors.data`)."""
    timestamps: dict[str, int] = field(default_factory=dict)
    """in_progress_at, finalizing_at, completed_at, ... as they happened."""
    counts: RequestCounts = field(default_factory=RequestCounts)
    usage: TokenUsage = field(default_factory=TokenUsage)
    output_file_id: str | None = None
    error_file_id: str | None = None
    outcome: BatchStatus | None = None
    """Where a finalizing batch ends: completed, or expired."""


@dataclass(frozen=True)
class PendingLine:
    """An input line still to run."""

    line_no: int
    request: str
    """The RequestLine's JSON."""
