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
    for n in range(max_n, min_n - 1, -1):
        if length <= n:
            continue
        pattern = tokens[length - n :]
        last = pattern[-1]
        # `end` is the index of a candidate occurrence's last token; it must leave at
        # least one token after it, so it stops short of the pattern itself.
        end = length - 2
        while end >= n - 1:
            if tokens[end] == last and tokens[end - n + 1 : end + 1] == pattern:
                return tokens[end + 1 : end + 1 + k]
            end -= 1
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
