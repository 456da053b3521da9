"""Finds stop strings in streamed text without ever emitting part of one.

Matching is an Aho-Corasick automaton over the stop strings: each character of output
moves the automaton one step (amortised constant work), so the cost of a step does not
grow with the number or length of the stop strings, nor with the text held back. The
automaton is built once per request and shared by its `n` sequences.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass
class StopResult:
    """What may be shown after one `feed`, and the stop string that ended generation."""

    emit: str
    """Text safe to append to the output now."""
    matched: str | None
    """The stop string found, or None; once set, generation is over."""


class StopAutomaton:
    """An Aho-Corasick automaton over a set of stop strings. Immutable once built.

    State 0 is the root. A state stands for the longest suffix of the text read so far
    that is a prefix of some stop string. Per state it precomputes the stop string that
    ends there (the longest one, if several do) and how much text must be held back: the
    longest suffix that is a *proper* prefix of a stop string, since only such text can
    still become part of a match.
    """

    def __init__(self, stop: list[str]) -> None:
        if any(not s for s in stop):
            raise ValueError("stop strings must be non-empty")
        self.stop = tuple(dict.fromkeys(stop))
        self._children: list[dict[str, int]] = [{}]
        self._depth = [0]
        terminal: list[str | None] = [None]
        for s in self.stop:
            node = 0
            for ch in s:
                nxt = self._children[node].get(ch)
                if nxt is None:
                    nxt = len(self._children)
                    self._children[node][ch] = nxt
                    self._children.append({})
                    self._depth.append(self._depth[node] + 1)
                    terminal.append(None)
                node = nxt
            terminal[node] = s
        n = len(self._children)
        self._fail = [0] * n
        self._match: list[str | None] = [None] * n
        self._hold = [0] * n
        # Breadth-first, so a state's failure target is final before the state is seen.
        order: deque[int] = deque(self._children[0].values())
        while order:
            node = order.popleft()
            fail = self._fail[node]
            self._match[node] = terminal[node] or self._match[fail]
            self._hold[node] = self._depth[node] if self._children[node] else self._hold[fail]
            for ch, child in self._children[node].items():
                f = fail
                while f and ch not in self._children[f]:
                    f = self._fail[f]
                target = self._children[f].get(ch, 0)
                self._fail[child] = target if target != child else 0
                order.append(child)

    @property
    def num_states(self) -> int:
        return len(self._children)

    def step(self, state: int, ch: str) -> int:
        """The state after reading `ch` in `state`."""
        children, fail = self._children, self._fail
        while True:
            nxt = children[state].get(ch)
            if nxt is not None:
                return nxt
            if state == 0:
                return 0
            state = fail[state]

    def match(self, state: int) -> str | None:
        """The longest stop string ending at this state, if any."""
        return self._match[state]

    def hold(self, state: int) -> int:
        """Characters to hold back in this state: they may yet start a stop string."""
        return self._hold[state]


class StopChecker:
    """Matches stop strings on the accumulated text, across token boundaries.

    Text that could be the start of a stop string is held back until it either completes
    one or can no longer do so. When stop strings overlap, the one that completes first in
    the text wins (the longer one if two complete at the same character), so the result
    does not depend on how the text was split into deltas. Each `feed` costs time linear
    in its delta (amortised), whatever the stop strings.
    """

    def __init__(
        self, stop: list[str], include_stop_str: bool, automaton: StopAutomaton | None = None
    ) -> None:
        self._automaton = automaton if automaton is not None else StopAutomaton(stop)
        self._include = include_stop_str
        self._state = 0
        self._held = ""
        self.matched: str | None = None
        """The stop string found, once `feed` has reported one."""

    @property
    def held(self) -> str:
        """Text received but not yet emitted."""
        return self._held

    def feed(self, delta: str, can_stop: bool = True) -> StopResult:
        """Add `delta` to the text and return what can be emitted now. Mutates the held text
        and the automaton state.

        On a match, `emit` ends just before the stop string (or just after it with
        include_stop_str), `matched` names it and the checker is finished: later calls
        raise RuntimeError. With `can_stop` False (below min_tokens), stop strings that
        complete in this delta are not matched, but a prefix of one is still held back.
        """
        if self.matched is not None:
            raise RuntimeError(f"stop string {self.matched!r} already matched")
        automaton = self._automaton
        if not automaton.stop:
            return StopResult(emit=delta, matched=None)
        text = self._held + delta
        state = self._state
        offset = len(self._held)
        for i, ch in enumerate(delta):
            state = automaton.step(state, ch)
            stop = automaton.match(state) if can_stop else None
            if stop is not None:
                end = offset + i + 1
                self._held = ""
                self.matched = stop
                return StopResult(
                    emit=text[: end if self._include else end - len(stop)], matched=stop
                )
        self._state = state
        keep = automaton.hold(state)
        self._held = text[len(text) - keep :] if keep else ""
        return StopResult(emit=text[: len(text) - keep], matched=None)

    def flush(self) -> str:
        """Return and forget the held text; for generation that ended another way."""
        held, self._held = self._held, ""
        self._state = 0
        return held
