"""The PII detector the gateway calls: lazy, thread-safe, one per process.

`PiiDetector.find(text)` cuts the text into segments (see `segments`), runs the
configured backend on each, keeps the spans at or above the score threshold and
merges overlaps. `scan(text)` also redacts, returning what the gateway records.
Streamed output goes through `StreamRedactor`, which cuts at the same places and so
redacts exactly as `scan` does.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

from tokenmill.gateway.guardrails.segments import DEFAULT_MAX_SEGMENT_CHARS, split_segments
from tokenmill.gateway.guardrails.spans import PiiSpan, Redaction, redact, resolve_overlaps

BACKENDS = ("presidio", "rampart")


@dataclass(frozen=True)
class PiiConfig:
    """How personal data is detected."""

    backend: str = "rampart"
    """"rampart" (the Rampart ONNX NER model plus checksum patterns) or "presidio"
    (Presidio's recognizers with spaCy's small English NER). Rampart is the default:
    on the labelled set it finds more names and cards at the same precision, and it
    loads in about a second against Presidio's half minute (docs/guardrails.md)."""
    score_threshold: float = 0.35
    """Spans scored below this are ignored. Presidio scores a phone number without a
    context word such as "call" at 0.4, so a threshold above that drops them."""
    max_segment_chars: int = DEFAULT_MAX_SEGMENT_CHARS
    """Longest piece of text scanned at once, and so the most characters a streamed
    answer is held back while its sentence is unfinished."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"PII backend must be one of {BACKENDS}, got {self.backend!r}")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {self.score_threshold}")
        if self.max_segment_chars < 32:
            raise ValueError(f"max_segment_chars must be >= 32, got {self.max_segment_chars}")


class PiiBackend(Protocol):
    """A model behind the detector. `load` is called once, under the detector's lock;
    `find_batch` is then called concurrently and must not mutate the backend. A text's
    spans must not depend on the other texts of its batch."""

    name: str

    def load(self) -> None: ...

    def find_batch(self, texts: list[str]) -> list[list[PiiSpan]]: ...


def _make_backend(config: PiiConfig) -> PiiBackend:
    if config.backend == "presidio":
        from tokenmill.gateway.guardrails.presidio_backend import PresidioBackend

        return PresidioBackend()
    from tokenmill.gateway.guardrails.rampart_backend import RampartBackend

    return RampartBackend()


class PiiDetector:
    """Finds and redacts personal data; loads its model on first use.

    Construction is cheap. The first `find`/`scan` (or an explicit `load`, which a
    server calls at start-up so the first request does not pay for it) loads the
    backend under a lock, so concurrent first calls load it once. After loading,
    every method is read-only and safe from any thread.
    """

    def __init__(self, config: PiiConfig | None = None, backend: PiiBackend | None = None):
        self.config = config or PiiConfig()
        self._backend = backend or _make_backend(self.config)
        self._lock = threading.Lock()
        self._loaded = False

    @property
    def loaded(self) -> bool:
        """Whether the backend's model is in memory."""
        return self._loaded

    def load(self) -> None:
        """Load the backend if not loaded yet; idempotent and thread-safe."""
        if self._loaded:
            return
        with self._lock:
            if not self._loaded:
                self._backend.load()
                self._loaded = True

    def find_segment(self, segment: str) -> list[PiiSpan]:
        """Disjoint spans in one segment, scanned whole (the streaming redactor's unit)."""
        return self._find_segments([segment])[0]

    def find(self, text: str) -> list[PiiSpan]:
        """Disjoint spans in `text`, in order, found segment by segment (in one batch)."""
        ends = list(split_segments(text, self.config.max_segment_chars))
        starts = [0, *ends[:-1]]
        found = self._find_segments([text[a:b] for a, b in zip(starts, ends)])
        return [span.shifted(start) for start, spans in zip(starts, found) for span in spans]

    def _find_segments(self, segments: list[str]) -> list[list[PiiSpan]]:
        self.load()
        results: list[list[PiiSpan]] = [[] for _ in segments]
        # Blank segments cannot hold PII; skipping them saves a model call per blank line.
        scanned = [i for i, segment in enumerate(segments) if segment.strip()]
        if scanned:
            found = self._backend.find_batch([segments[i] for i in scanned])
            threshold = self.config.score_threshold
            for i, spans in zip(scanned, found):
                results[i] = resolve_overlaps(s for s in spans if s.score >= threshold)
        return results

    def scan(self, text: str) -> Redaction:
        """Find the spans in `text` and redact them; the input is left untouched."""
        spans = self.find(text)
        return Redaction(text=redact(text, spans), spans=tuple(spans))


_shared: dict[PiiConfig, PiiDetector] = {}
_shared_lock = threading.Lock()


def shared_pii_detector(config: PiiConfig | None = None) -> PiiDetector:
    """The process's detector for `config`, created on first call (not loaded).

    Models are large and read-only once loaded, so every request, worker thread and
    policy of one process shares one detector per configuration.
    """
    config = config or PiiConfig()
    with _shared_lock:
        detector = _shared.get(config)
        if detector is None:
            detector = _shared[config] = PiiDetector(config)
        return detector
