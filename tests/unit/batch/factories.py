"""Input lines and files for the batch tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def chat_line(custom_id: str, text: str = "hi", url: str = CHAT, **body: Any) -> str:
    body = {"messages": [{"role": "user", "content": text}], "max_tokens": 4, **body}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def completion_line(custom_id: str, prompt: str = "Once", **body: Any) -> str:
    body = {"prompt": prompt, "max_tokens": 4, **body}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": COMPLETIONS, "body": body})


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def read_jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
