"""Where a text may be cut into independently scanned segments.

Detection runs per segment, on prompts and on streamed output alike, so a streamed
answer is redacted exactly as the same text would be redacted whole: both cut it at
the same places. That holds because `segment_end` is *prefix-stable*: when it decides
on a prefix of a text (returns an index), it returns the same index on every longer
text, so a stream can commit a segment as soon as its end is decided and never has
to revisit it.

A segment ends after a sentence terminator followed by whitespace, or after a line
break; a full stop after an initial or a common title ("J.", "Dr.") does not end one.
A segment that would grow past `max_chars` is cut at the last space between two
lower-case words, which falls inside a span only for a name with a lower-case
particle ("Ana de la Cruz"), and only when there is no such space, hard at
`max_chars` (a run of `max_chars` characters without a space between lower-case words).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

DEFAULT_MAX_SEGMENT_CHARS = 400

# A terminator, any closing quotes or brackets, then one whitespace character; or a
# line break. The segment ends after the match, so only text before the cut decides it.
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s|\n")
# Abbreviations after which a full stop does not end a sentence ("Dr. Jane Doe").
_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "mt",
        "no",
        "vs",
        "etc",
        "inc",
        "ltd",
        "co",
        "corp",
        "dept",
        "fig",
        "approx",
    ]
)
_WORD_BEFORE = re.compile(r"(\w+)$")


def _is_sentence_end(text: str, match: re.Match[str]) -> bool:
    if match.group().endswith("\n"):
        return True
    if text[match.start()] != ".":
        return True
    # A bounded look-behind keeps the cost per candidate constant; a word longer than
    # the window is no abbreviation either way.
    word = _WORD_BEFORE.search(text, max(0, match.start() - 24), match.start())
    if word is None:
        return True
    word_text = word.group(1)
    # A single letter before a full stop is an initial ("J. R. Smith") or an
    # abbreviation ("e.g. "), not the end of a sentence.
    return len(word_text) > 1 and word_text.lower() not in _ABBREVIATIONS


def _is_soft_cut(text: str, index: int) -> bool:
    """Whether `index` (just after a space) sits between two lower-case words."""
    return text[index - 1] == " " and text[index - 2].islower() and text[index].islower()


def segment_end(text: str, max_chars: int, final: bool) -> int | None:
    """Where the first segment of `text` ends, or None if that is not decided yet.

    With `final` False, `text` may be the prefix of a longer text (a stream so far);
    the answer is then None unless it is certain to be the same for every extension.
    With `final` True, `text` is complete and the answer is never None for a non-empty
    text. Pure: reads `text` only.
    """
    if not text:
        return None
    limit = min(len(text), max_chars)
    for match in _SENTENCE_END.finditer(text, 0, limit):
        if _is_sentence_end(text, match):
            return match.end()
    if len(text) <= max_chars:
        return len(text) if final else None
    # Past the limit with no sentence end: the cut is decided, since text[max_chars]
    # (the look-ahead a soft cut needs) exists.
    for index in range(max_chars, 1, -1):
        if _is_soft_cut(text, index):
            return index
    return max_chars


def split_segments(text: str, max_chars: int = DEFAULT_MAX_SEGMENT_CHARS) -> Iterator[int]:
    """Yield the end offset of each segment of a complete `text`, in order."""
    offset = 0
    while offset < len(text):
        end = segment_end(text[offset:], max_chars, final=True)
        assert end is not None and end > 0
        offset += end
        yield offset
