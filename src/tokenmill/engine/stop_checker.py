"""Finds stop strings in streamed text without ever emitting part of one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StopResult:
    """What may be shown after one `feed`, and the stop string that ended generation."""

    emit: str
    """Text safe to append to the output now."""
    matched: str | None
    """The stop string found, or None; once set, generation is over."""


class StopChecker:
    """Matches stop strings on the accumulated text, across token boundaries.

    Text that could be the start of a stop string is held back until it either completes
    one or can no longer do so. When stop strings overlap, the one that completes first in
    the text wins (the longer one if two complete at the same character), so the result
    does not depend on how the text was split into deltas.
    """

    def __init__(self, stop: list[str], include_stop_str: bool) -> None:
        if any(not s for s in stop):
            raise ValueError("stop strings must be non-empty")
        self._stop = list(stop)
        self._include = include_stop_str
        self._held = ""
        self.matched: str | None = None
        """The stop string found, once `feed` has reported one."""

    @property
    def held(self) -> str:
        """Text received but not yet emitted."""
        return self._held

    def feed(self, delta: str, can_stop: bool = True) -> StopResult:
        """Add `delta` to the text and return what can be emitted now. Mutates the held text.

        On a match, `emit` ends just before the stop string (or just after it with
        include_stop_str), `matched` names it and the checker is finished: later calls
        raise RuntimeError. With `can_stop` False (below min_tokens), stop strings that
        complete in this delta are not matched, but a prefix of one is still held back.
        """
        if self.matched is not None:
            raise RuntimeError(f"stop string {self.matched!r} already matched")
        text = self._held + delta
        if can_stop:
            match = self._first_match(text, len(self._held))
            if match is not None:
                start, stop = match
                self._held = ""
                self.matched = stop
                end = start + len(stop) if self._include else start
                return StopResult(emit=text[:end], matched=stop)
        keep = self._partial_suffix_length(text)
        self._held = text[len(text) - keep :]
        return StopResult(emit=text[: len(text) - keep], matched=None)

    def flush(self) -> str:
        """Return and forget the held text; for generation that ended another way."""
        held, self._held = self._held, ""
        return held

    def _first_match(self, text: str, new_from: int) -> tuple[int, str] | None:
        """(start, stop string) of the earliest-ending occurrence that ends past `new_from`,
        so text already judged is not matched again."""
        best: tuple[int, int, str] | None = None
        for stop in self._stop:
            start = text.find(stop, max(0, new_from - len(stop) + 1))
            if start < 0:
                continue
            key = (start + len(stop), start, stop)
            if best is None or key[:2] < best[:2]:
                best = key
        return None if best is None else (best[1], best[2])

    def _partial_suffix_length(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
        longest = 0
        for stop in self._stop:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest
