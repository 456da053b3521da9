"""PII spans and the redaction that replaces them with placeholders.

Everything here is pure and model-free: the detectors produce `PiiSpan`s, and
`redact` turns a text plus its spans into the text the model or the client sees.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

EMAIL_ADDRESS = "EMAIL_ADDRESS"
PHONE_NUMBER = "PHONE_NUMBER"
CREDIT_CARD = "CREDIT_CARD"
IBAN_CODE = "IBAN_CODE"
IP_ADDRESS = "IP_ADDRESS"
PERSON = "PERSON"

ENTITY_TYPES: tuple[str, ...] = (
    EMAIL_ADDRESS,
    PHONE_NUMBER,
    CREDIT_CARD,
    IBAN_CODE,
    IP_ADDRESS,
    PERSON,
)
"""The entity types the guardrail detects; each is also its placeholder's name."""


@dataclass(frozen=True, order=True)
class PiiSpan:
    """One detected piece of personal data: `text[start:end]` is of `entity_type`.

    Offsets are Python string indices (code points) into the scanned text; `score` is
    the detector's confidence in [0, 1].
    """

    start: int
    end: int
    entity_type: str
    score: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"a span needs 0 <= start < end, got [{self.start}, {self.end})")

    def shifted(self, offset: int) -> PiiSpan:
        """The same span moved by `offset` characters (a segment's spans into its text)."""
        return PiiSpan(self.start + offset, self.end + offset, self.entity_type, self.score)


@dataclass(frozen=True)
class Redaction:
    """The outcome of scanning one text: what the gateway records and forwards.

    `text` is the redacted text (the input itself when nothing was found), `spans`
    the non-overlapping spans that were replaced, in order.
    """

    text: str
    spans: tuple[PiiSpan, ...]

    @property
    def changed(self) -> bool:
        """Whether any span was replaced."""
        return bool(self.spans)

    @property
    def entity_types(self) -> tuple[str, ...]:
        """The distinct entity types found, sorted (for the audit log and metrics)."""
        return tuple(sorted({span.entity_type for span in self.spans}))


def placeholder(entity_type: str) -> str:
    """The text that stands in for a span of `entity_type`, e.g. `<EMAIL_ADDRESS>`."""
    return f"<{entity_type}>"


def resolve_overlaps(spans: Iterable[PiiSpan]) -> list[PiiSpan]:
    """Merge overlapping or touching-by-overlap spans into disjoint spans, in order.

    Redaction must never leave part of a detected span visible, so overlapping spans
    become their union. The union is labelled with the type of its most confident
    member (longer wins a tie) and carries that member's score.
    """
    ordered = sorted(spans, key=lambda s: (s.start, s.end))
    merged: list[PiiSpan] = []
    for span in ordered:
        if merged and span.start < merged[-1].end:
            last = merged[-1]
            best = max(last, span, key=lambda s: (s.score, s.end - s.start))
            merged[-1] = PiiSpan(last.start, max(last.end, span.end), best.entity_type, best.score)
        else:
            merged.append(span)
    return merged


def redact(text: str, spans: Iterable[PiiSpan]) -> str:
    """Return `text` with each span replaced by its placeholder; does not mutate input.

    Overlapping spans are merged first (see `resolve_overlaps`), so every character
    of every span is replaced.
    """
    pieces: list[str] = []
    cursor = 0
    for span in resolve_overlaps(spans):
        if span.end > len(text):
            raise ValueError(f"span [{span.start}, {span.end}) is outside a text of {len(text)}")
        pieces.append(text[cursor : span.start])
        pieces.append(placeholder(span.entity_type))
        cursor = span.end
    pieces.append(text[cursor:])
    return "".join(pieces)
