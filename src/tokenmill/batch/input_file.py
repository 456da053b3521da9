"""Reading a batch's input file into lines: requests, and the malformed ones with their error.

Problems of a single line never stop the batch: each becomes that line's error result.
Only a file that holds no request at all, or more than MAX_LINES, fails the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenmill.batch.lines import MalformedLine, RequestLine, malformed_record, parse_line

MAX_LINES = 50_000
"""OpenAI's limit of requests per batch."""


@dataclass
class ParsedFile:
    """An input file read line by line. `lines` holds (line number, custom_id, request
    JSON or None, error result or None), as BatchStore.load_lines takes them."""

    lines: list[tuple[int, str | None, str | None, dict[str, Any] | None]] = field(
        default_factory=list
    )
    model: str | None = None
    """The first request's `model`, shown as the batch's model."""
    error: dict[str, Any] | None = None
    """Why the file as a whole cannot run (OpenAI's batch `errors` entry), if it cannot."""


def read_input_file(path: Path, endpoint: str | None) -> ParsedFile:
    """Parses every non-blank line of `path`; lines must go to `endpoint` (when given)
    and carry distinct custom_ids."""
    parsed = ParsedFile()
    seen: dict[str, int] = {}
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            if len(parsed.lines) >= MAX_LINES:
                parsed.error = {
                    "code": "too_many_requests",
                    "message": f"The input file has more than {MAX_LINES} requests; split it "
                    "into several batches.",
                    "line": line_no,
                    "param": None,
                }
                return parsed
            line = parse_raw(raw, line_no, endpoint)
            if isinstance(line, RequestLine):
                first = seen.setdefault(line.custom_id, line_no)
                if first != line_no:
                    line = MalformedLine(
                        line.custom_id,
                        "duplicate_custom_id",
                        f"Line {line_no}: custom_id {line.custom_id!r} was already used on line "
                        f"{first}; each request of a batch needs its own.",
                    )
            if isinstance(line, MalformedLine):
                parsed.lines.append((line_no, line.custom_id, None, malformed_record(line)))
            else:
                if parsed.model is None and isinstance(line.body.get("model"), str):
                    parsed.model = line.body["model"]
                parsed.lines.append((line_no, line.custom_id, line.to_json(), None))
    if not parsed.lines:
        parsed.error = {
            "code": "empty_file",
            "message": "The input file holds no requests: write one JSON request per line.",
            "line": None,
            "param": "input_file_id",
        }
    return parsed


def parse_raw(raw: bytes, line_no: int, endpoint: str | None) -> RequestLine | MalformedLine:
    """One line's bytes as a request, or why not (invalid UTF-8 included)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return MalformedLine(None, "invalid_encoding", f"Line {line_no} is not UTF-8: {exc}.")
    return parse_line(text, line_no, endpoint)
