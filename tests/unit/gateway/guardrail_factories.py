"""Factories for the guardrail unit tests: the labelled examples and a model-free backend."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

from tokenmill.gateway.guardrails.patterns import find_structured
from tokenmill.gateway.guardrails.pii import PiiConfig, PiiDetector
from tokenmill.gateway.guardrails.spans import PERSON, PiiSpan

PII_SET = Path(__file__).resolve().parents[3] / "benchmarks" / "data" / "guardrails_pii.txt"
_MARK = re.compile(r"\{\{[A-Z]+\|(.+?)\}\}")


def pii_texts() -> list[str]:
    """The texts of the labelled PII set, marks removed (positives and negatives)."""
    lines = PII_SET.read_text().splitlines()
    return [_MARK.sub(r"\1", line) for line in lines if line and not line.startswith("#")]


class NameListBackend:
    """Patterns plus an exact list of names: deterministic, instant, and like a model it
    finds a span only when the whole name is in the scanned text."""

    name = "names"
    NAMES = ("Maria Gonzalez", "Jonas Becker", "Priya Raman", "Chen Wei", "Sam")

    def __init__(self, load_seconds: float = 0.0) -> None:
        self.loads = 0
        self._load_seconds = load_seconds
        self._lock = threading.Lock()
        self._pattern = re.compile(r"\b(?:" + "|".join(map(re.escape, self.NAMES)) + r")\b")

    def load(self) -> None:
        with self._lock:
            self.loads += 1
        time.sleep(self._load_seconds)

    def find_batch(self, texts: list[str]) -> list[list[PiiSpan]]:
        return [self._find(text) for text in texts]

    def _find(self, text: str) -> list[PiiSpan]:
        names = [PiiSpan(m.start(), m.end(), PERSON) for m in self._pattern.finditer(text)]
        return names + find_structured(text)


def make_detector(max_segment_chars: int = 400, load_seconds: float = 0.0) -> PiiDetector:
    """A PiiDetector over `NameListBackend`."""
    return PiiDetector(
        PiiConfig(max_segment_chars=max_segment_chars), backend=NameListBackend(load_seconds)
    )
