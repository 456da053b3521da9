"""Redaction of streamed output: release text only once no PII span can still cover it.

A model's answer arrives as deltas of any size, so a name or an email may be cut
across many of them. `StreamRedactor` buffers the unfinished segment (see
`segments`) and releases each segment, redacted, as soon as its end is decided.
Nothing of a segment is sent before its end, so no part of a span in it can leak,
whatever the split points.

Guarantees, for any split of a text into deltas:
- `"".join(feed(d) for d in deltas) + flush() == detector.scan(text).text`: the
  stream cuts where `PiiDetector.find` cuts, because `segment_end` is prefix-stable,
  and each segment is scanned whole, exactly once.
- Hold-back: after `feed` returns, at most `config.max_segment_chars` characters are
  held (400 by default): a sentence end, a line break or that length releases them.
- Cost per delta: a search for a segment end in the held text (at most
  `max_segment_chars` characters) plus one detector call per released segment; the
  output already sent is never scanned again.
"""

from __future__ import annotations

from tokenmill.gateway.guardrails.pii import PiiDetector
from tokenmill.gateway.guardrails.segments import segment_end
from tokenmill.gateway.guardrails.spans import PiiSpan, redact


class StreamRedactor:
    """Redacts one streamed output; create one per generated sequence.

    Not thread-safe: one producer feeds it in order. The detector it uses is shared
    and thread-safe.
    """

    def __init__(self, detector: PiiDetector) -> None:
        self._detector = detector
        self._max_chars = detector.config.max_segment_chars
        self._held = ""
        self._entity_types: set[str] = set()
        self._spans = 0
        self._closed = False

    @property
    def held(self) -> int:
        """Characters received but not yet released."""
        return len(self._held)

    @property
    def changed(self) -> bool:
        """Whether any released text was redacted so far."""
        return self._spans > 0

    @property
    def entity_types(self) -> tuple[str, ...]:
        """Distinct entity types redacted so far, sorted."""
        return tuple(sorted(self._entity_types))

    def feed(self, delta: str) -> str:
        """Take the next delta; return the text now safe to send (often "").

        Mutates the held buffer and the counts of what was redacted.
        """
        if self._closed:
            raise RuntimeError("StreamRedactor.feed after flush()")
        self._held += delta
        return self._release(final=False)

    def flush(self) -> str:
        """End the stream: return the rest of the text, redacted. Later feeds raise."""
        self._closed = True
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        pieces: list[str] = []
        while self._held:
            end = segment_end(self._held, self._max_chars, final=final)
            if end is None:
                break
            segment, self._held = self._held[:end], self._held[end:]
            pieces.append(self._redact(segment))
        return "".join(pieces)

    def _redact(self, segment: str) -> str:
        spans: list[PiiSpan] = self._detector.find_segment(segment)
        self._spans += len(spans)
        self._entity_types.update(span.entity_type for span in spans)
        return redact(segment, spans)
