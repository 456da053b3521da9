"""Stop strings across delta boundaries: exact emitted text, held text and match."""

from __future__ import annotations

import pytest

from tokenmill.engine.stop_checker import StopChecker, StopResult


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
