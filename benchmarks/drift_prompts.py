"""The drift benchmark's prompt sets, read from benchmarks/data/drift/.

- english: varied English chat prompts (the in-distribution traffic);
- french: French chat prompts, most on the same topics as English ones;
- code: programming questions, most with a code snippet;
- long: a task ("summarise...", "list the action items...") over one or two pasted
  passages (memos, notices, stories, reports): prompts about 20 to 40 times longer.

All written for tokenmill's benchmarks (no third-party text); see docs/drift.md.
"""

from __future__ import annotations

import random
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "drift"
SETS = ("english", "french", "code", "long")

_LONG_TASKS = (
    "Summarise the following text in three bullet points.",
    "Read the text below and list every action item or request it contains.",
    "What is the main point of the following text? Answer in two sentences.",
    "Rewrite the following text so that it is half as long but keeps all the facts.",
    "Which problems or risks are mentioned in the text below?",
    "Write a short reply to the following message, as if you were the recipient.",
    "Give the following text a title and a one-line summary.",
    "Explain the following text to a twelve-year-old.",
)
NUM_LONG = 100


def _split(path: Path, sep: str | None) -> list[str]:
    text = path.read_text(encoding="utf-8")
    parts = text.split(f"\n{sep}\n") if sep else text.splitlines()
    return [p.strip() for p in parts if p.strip()]


def load(name: str) -> list[str]:
    """The prompts of set `name` (one of SETS), in a fixed order."""
    if name == "english":
        return _split(DATA / "english_chat.txt", None)
    if name == "french":
        return _split(DATA / "french_chat.txt", None)
    if name == "code":
        return _split(DATA / "code.txt", "%%")
    if name == "long":
        passages = _split(DATA / "long_passages.txt", "%%")
        rng = random.Random(0)
        prompts = []
        for _ in range(NUM_LONG):
            chosen = rng.sample(passages, rng.choice((1, 2)))
            prompts.append(rng.choice(_LONG_TASKS) + "\n\n" + "\n\n".join(chosen))
        return prompts
    raise ValueError(f"unknown prompt set {name!r}; known: {SETS}")
