"""Stop strings across delta boundaries: exact emitted text, held text and match."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenmill.engine import stop_checker
from tokenmill.engine.stop_checker import StopAutomaton, StopChecker, StopResult


def feed_all(checker: StopChecker, deltas: list[str]) -> tuple[list[str], str | None]:
    emitted = []
    for delta in deltas:
        result = checker.feed(delta)
        emitted.append(result.emit)
        if result.matched is not None:
            return emitted, result.matched
    return emitted, None


def test_no_stop_strings_passes_text_through():
    checker = StopChecker([], include_stop_str=False)
    assert checker.feed("abc") == StopResult(emit="abc", matched=None)
    assert checker.flush() == ""


def test_stop_string_split_over_deltas_is_never_partly_emitted():
    checker = StopChecker(["END"], include_stop_str=False)
    emitted, matched = feed_all(checker, ["hello E", "N", "D tail"])
    assert emitted == ["hello ", "", ""]
    assert matched == "END"
    assert checker.matched == "END"


def test_include_stop_str_emits_through_the_stop_string_and_drops_the_rest():
    checker = StopChecker(["END"], include_stop_str=True)
    emitted, matched = feed_all(checker, ["hello E", "ND and more"])
    assert emitted == ["hello ", "END"]
    assert matched == "END"


def test_held_prefix_released_when_it_cannot_complete():
    checker = StopChecker(["END"], include_stop_str=False)
    assert checker.feed("xEN").emit == "x"
    assert checker.held == "EN"
    assert checker.feed("Oy").emit == "ENOy"
    assert checker.held == ""


def test_holds_longest_suffix_that_prefixes_any_stop_string():
    checker = StopChecker(["abcd", "cx"], include_stop_str=False)
    result = checker.feed("zzabc")
    assert result == StopResult(emit="zz", matched=None)
    assert checker.held == "abc"
    assert checker.flush() == "abc"
    assert checker.held == ""


def test_earliest_completing_stop_string_wins():
    checker = StopChecker(["bcdef", "cd"], include_stop_str=True)
    assert checker.feed("abcdefg") == StopResult(emit="abcd", matched="cd")


def test_same_end_prefers_the_longer_stop_string():
    checker = StopChecker(["cd", "bcd"], include_stop_str=True)
    assert checker.feed("abcd") == StopResult(emit="abcd", matched="bcd")
    other = StopChecker(["cd", "bcd"], include_stop_str=False)
    assert other.feed("abcd") == StopResult(emit="a", matched="bcd")


@pytest.mark.parametrize("size", [1, 2, 3, 5, 100])
def test_result_does_not_depend_on_how_text_is_split(size):
    text = "one <|st two <|stop|> three"
    checker = StopChecker(["<|stop|>", "two <|x"], include_stop_str=False)
    deltas = [text[i : i + size] for i in range(0, len(text), size)]
    emitted, matched = feed_all(checker, deltas)
    assert "".join(emitted) == "one <|st two "
    assert matched == "<|stop|>"


def test_can_stop_false_passes_completed_stop_strings_but_still_holds_prefixes():
    checker = StopChecker(["ab", "abc"], include_stop_str=False)
    assert checker.feed("xab", can_stop=False) == StopResult(emit="x", matched=None)
    assert checker.held == "ab"
    assert checker.feed("z") == StopResult(emit="abz", matched=None)
    assert checker.feed("ab") == StopResult(emit="", matched="ab")


def test_feed_after_match_raises():
    checker = StopChecker(["x"], include_stop_str=False)
    assert checker.feed("ax").matched == "x"
    with pytest.raises(RuntimeError):
        checker.feed("more")


class NaiveStopChecker:
    """The matcher's specification, written the slow and obvious way: search the whole
    held text for every stop string after each delta."""

    def __init__(self, stop: list[str], include_stop_str: bool) -> None:
        self.stop, self.include, self.held = stop, include_stop_str, ""

    def feed(self, delta: str, can_stop: bool = True) -> StopResult:
        text, new_from = self.held + delta, len(self.held)
        if can_stop:
            found = []
            for s in self.stop:
                start = text.find(s, max(0, new_from - len(s) + 1))
                if start >= 0:
                    found.append((start + len(s), start, s))
            if found:
                end, start, s = min(found)
                self.held = ""
                return StopResult(text[: end if self.include else start], s)
        keep = 0
        for s in self.stop:
            for size in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:size]):
                    keep = max(keep, size)
                    break
        self.held = text[len(text) - keep :]
        return StopResult(text[: len(text) - keep], None)


@given(
    stop=st.lists(st.text("abc", min_size=1, max_size=5), min_size=1, max_size=4),
    deltas=st.lists(st.tuples(st.text("abcd", max_size=6), st.booleans()), min_size=1, max_size=12),
    include=st.booleans(),
)
@settings(max_examples=400, deadline=None)
def test_automaton_agrees_with_the_naive_specification(stop, deltas, include):
    fast, slow = StopChecker(stop, include), NaiveStopChecker(stop, include)
    for delta, can_stop in deltas:
        expected = slow.feed(delta, can_stop)
        assert fast.feed(delta, can_stop) == expected
        assert fast.held == slow.held
        if expected.matched is not None:
            break


def traced_lines(fn) -> int:
    """Python lines executed inside the stop checker's module while `fn` runs: a
    deterministic measure of work, unlike a clock on a shared machine."""
    count = 0

    def tracer(frame, event, arg):
        nonlocal count
        if frame.f_code.co_filename != stop_checker.__file__:
            return None
        if event == "line":
            count += 1
        return tracer

    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(None)
    return count


def test_work_per_character_does_not_grow_with_the_stop_strings():
    """Issue 14, item 1: 1,000 stop strings and a forced repeated token made every step
    quadratic in the stop strings' length. Each character now costs the same whatever
    the stop strings: 32 strings of 256 characters cost what 2 strings of 8 do."""

    def work(count: int, length: int) -> int:
        stops = ["a" * (length - 1) + chr(ord("b") + i % 20) + str(i) for i in range(count)]
        automaton = StopAutomaton(stops)
        checker = StopChecker(stops, include_stop_str=False, automaton=automaton)
        return traced_lines(lambda: [checker.feed("a") for _ in range(2000)])

    small, large = work(2, 8), work(32, 256)
    assert large <= small * 1.05, (small, large)


def test_held_text_is_bounded_by_the_longest_stop_string():
    checker = StopChecker(["a" * 50 + "b"], include_stop_str=False)
    emitted = "".join(checker.feed("a" * 7).emit for _ in range(100))
    assert len(checker.held) == 50 and len(emitted) == 700 - 50
