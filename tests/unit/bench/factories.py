"""Toy tokenizers for workload tests."""

from __future__ import annotations

from typing import ClassVar


class MergingTokenizer:
    """Greedy longest match over {"a", "b", "ab", " ", special "<s>"}: decoding ids 0, 1
    gives "ab", which re-encodes as the single id 2, so lengths shift on a round trip."""

    pieces: ClassVar[list[str]] = ["a", "b", "ab", " ", "<s>"]
    vocab_size = 5
    special_ids = frozenset({4})

    def encode(self, text: str) -> list[int]:
        ids, i = [], 0
        while i < len(text):
            for piece in sorted(self.pieces, key=len, reverse=True):
                if text.startswith(piece, i):
                    ids.append(self.pieces.index(piece))
                    i += len(piece)
                    break
            else:
                raise ValueError(f"cannot encode {text[i]!r}")
        return ids

    def decode(self, ids: list[int]) -> str:
        return "".join(self.pieces[i] for i in ids)


class WordTokenizer:
    vocab_size = 0
    special_ids = frozenset()

    def encode(self, text: str) -> list[int]:
        return [len(w) for w in text.split()]

    def decode(self, ids: list[int]) -> str:
        return " ".join("x" * i for i in ids)
