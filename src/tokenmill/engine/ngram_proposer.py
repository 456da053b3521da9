"""Prompt-lookup speculation: draft tokens copied from earlier in a sequence's own text.

No second model: when the last n tokens of a sequence occurred before (in its prompt or
output), the tokens that followed that occurrence are a cheap guess at what comes next.
Copy-heavy work (quoting, summarising with quotes, editing code) repeats long runs, so
the guesses are often right; the target model verifies them in one forward pass.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from tokenmill.config import SpeculativeConfig


def find_continuation(tokens: list[int], k: int, max_n: int, min_n: int) -> list[int]:
    """Up to `k` tokens that followed the most recent earlier occurrence of the last n
    tokens of `tokens`, for n from `max_n` down to `min_n` (the longest match wins).
    Returns [] when no such n-gram occurred before. Mutates nothing."""
    length = len(tokens)
    # Searched reversed so that list.index (C speed) walks back from the end: rev[i] is
    # tokens[length - 1 - i], and a match ending at tokens[end] starts rev[length-1-end:].
    rev = tokens[::-1]
    for n in range(max_n, min_n - 1, -1):
        if length <= n:
            continue
        pattern = rev[:n]
        i = 1  # the occurrence must end before the last token, and start at 0 or later
        while True:
            try:
                i = rev.index(pattern[0], i, length - n + 1)
            except ValueError:
                break
            if rev[i : i + n] == pattern:
                end = length - 1 - i
                return tokens[end + 1 : end + 1 + k]
            i += 1
    return []


@dataclass
class SpeculationState:
    """One sequence's speculation record: its drafts for the current step and the
    acceptance of its recent proposals (for auto-off)."""

    draft_token_ids: list[int] = field(default_factory=list)
    """Drafts scheduled for verification this step; [] when decoding plainly."""
    recent: deque[tuple[int, int]] = field(default_factory=deque)
    """(proposed, accepted) of the latest proposals, at most the config's window."""
    disabled: bool = False
    """Set by auto-off: the sequence decodes plainly from then on."""

    def record(self, proposed: int, accepted: int, config: SpeculativeConfig) -> None:
        """Count one verified proposal; turns speculation off for this sequence when the
        window is full and its acceptance rate fell below `config.min_acceptance`."""
        self.recent.append((proposed, accepted))
        if len(self.recent) > config.window:
            self.recent.popleft()
        if len(self.recent) == config.window:
            total = sum(p for p, _ in self.recent)
            hits = sum(a for _, a in self.recent)
            if hits < config.min_acceptance * total:
                self.disabled = True


class NgramProposer:
    """Chooses each decoding sequence's drafts. Stateless apart from its config."""

    def __init__(self, config: SpeculativeConfig, max_model_len: int):
        self.config = config
        self.max_model_len = max_model_len

    def propose(self, tokens: list[int], num_output: int, max_tokens: int) -> list[int]:
        """Drafts for a sequence whose text is `tokens` (prompt + output, all computed
        but the last) with `num_output` tokens generated of `max_tokens` allowed. A step
        emits at most drafts + 1 tokens, so drafts never reach past max_tokens or the
        context length. Mutates nothing."""
        room = min(
            self.config.num_tokens,
            max_tokens - num_output - 1,
            self.max_model_len - len(tokens),
        )
        if room <= 0:
            return []
        c = self.config
        return find_continuation(tokens, room, c.ngram_max, c.ngram_min)
