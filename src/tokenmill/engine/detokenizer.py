"""Turns a stream of token ids into a stream of text that never splits a character."""

from __future__ import annotations

from typing import Protocol

REPLACEMENT_CHAR = "\ufffd"
"""What a decoder yields for bytes that do not (yet) form a whole UTF-8 character."""

_PROMPT_CONTEXT_TOKENS = 5
"""Prompt tokens decoded ahead of the first output token, so its leading space (SentencePiece)
or its continuation bytes (byte-level BPE) come out as the full decode would have them."""


class TokenDecoder(Protocol):
    """The slice of a tokenizer the detokenizer needs."""

    all_special_ids: set[int]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str: ...

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]: ...


class IncrementalDetokenizer:
    """Decodes one completion token by token, emitting only whole characters.

    vLLM's prefix/read offset technique: the text of the new tokens is the decode of a small
    window (tokens already emitted last time, then the unread ones) minus the decode of the
    window's emitted part. While that decode ends in U+FFFD the tokens are held, since a
    multi-byte character is still incomplete. Each `add` decodes only this window, never
    the whole output.
    """

    def __init__(
        self, tokenizer: TokenDecoder, prompt_token_ids: list[int], skip_special_tokens: bool
    ) -> None:
        self._tokenizer = tokenizer
        self._skip_special = skip_special_tokens
        self._special_ids = set(tokenizer.all_special_ids)
        self._ids = list(prompt_token_ids[max(0, len(prompt_token_ids) - _PROMPT_CONTEXT_TOKENS) :])
        self._prefix_offset = 0
        self._read_offset = len(self._ids)
        self._text_parts: list[str] = []

    @property
    def text(self) -> str:
        """All text emitted so far (by `add` and `flush`)."""
        return "".join(self._text_parts)

    def add(self, token_id: int) -> str:
        """Append `token_id` and return the text it completes ("" while a character is
        incomplete or the token is a skipped special token). Mutates the window and `text`."""
        if self._skip_special and token_id in self._special_ids:
            return ""
        self._ids.append(token_id)
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        if len(new_text) <= len(prefix_text) or new_text.endswith(REPLACEMENT_CHAR):
            return ""
        delta = new_text[len(prefix_text) :]
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        self._forget_emitted()
        self._text_parts.append(delta)
        return delta

    def flush(self) -> str:
        """Return the held tail as it decodes now (possibly ending in U+FFFD), for the end of
        generation; afterwards nothing is held. Mutates the window and `text`."""
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        delta = new_text[len(prefix_text) :]
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        self._forget_emitted()
        if delta:
            self._text_parts.append(delta)
        return delta

    def _forget_emitted(self) -> None:
        """Drop ids before the window so memory stays bounded by the window, not the output."""
        del self._ids[: self._prefix_offset]
        self._read_offset -= self._prefix_offset
        self._prefix_offset = 0

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip_special)


def decode_token(tokenizer: TokenDecoder, token_id: int) -> str:
    """The text of a single token for logprob display; special tokens keep their name.

    A byte-level token holding part of a character decodes to U+FFFD, as in vLLM.
    """
    return tokenizer.decode([token_id], skip_special_tokens=False)
