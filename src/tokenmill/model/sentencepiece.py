"""SentencePiece BPE vocabularies as GGUF files store them (llama.cpp's "llama" model).

A GGUF keeps the pieces in rank order, with scores and token types, but no merge list.
The merges are implied by the vocabulary: a piece is made by joining two shorter pieces,
and pieces earlier in the file are merged first. We rebuild that list and hand it to a
`tokenizers` BPE with byte fallback, which then tokenizes as transformers' Gemma
tokenizer does. Spaces are spelled "▁" inside pieces; the normalizer does the same to
the text, and the decoder undoes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tokenizers import Tokenizer as RustTokenizer
from tokenizers import decoders, models, normalizers

from tokenmill.errors import ModelLoadError

SPACE = "\u2581"


def spelled_pieces(tokens: Sequence[str]) -> list[str]:
    """Each piece as the BPE model sees it: a real space becomes "▁". Gemma stores its
    runs-of-spaces pieces with real spaces and every other piece with "▁"."""
    return [t.replace(" ", SPACE) for t in tokens]


def implied_merges(pieces: Sequence[str]) -> list[tuple[str, str]]:
    """The merge list a rank-ordered vocabulary implies: every split of a piece into two
    pieces of the vocabulary is a merge; merges producing earlier pieces rank first, and
    among one piece's splits the one with the longer left part ranks first."""
    known = set(pieces)
    merges = []
    for piece in pieces:
        for cut in range(len(piece) - 1, 0, -1):
            left, right = piece[:cut], piece[cut:]
            if left in known and right in known:
                merges.append((left, right))
    return merges


def sentencepiece_backend(metadata: Mapping[str, Any]) -> RustTokenizer:
    """A BPE tokenizer (model, normalizer, decoder; no added tokens yet) from a GGUF's
    `tokenizer.ggml.*` key/values. ModelLoadError for a vocabulary that wants a
    space prefix (Llama 2 style), which has not been checked against a reference."""
    if metadata.get("tokenizer.ggml.add_space_prefix", True):
        raise ModelLoadError(
            "SentencePiece GGUF vocabularies with add_space_prefix are not supported yet; "
            "use the model's HF directory instead.",
            setting="model",
        )
    pieces = spelled_pieces(metadata["tokenizer.ggml.tokens"])
    vocab = {piece: i for i, piece in enumerate(pieces)}
    if len(vocab) != len(pieces):
        raise ModelLoadError("The GGUF vocabulary spells two tokens the same way.")
    unk_id = metadata.get("tokenizer.ggml.unknown_token_id")
    backend = RustTokenizer(
        models.BPE(
            vocab=vocab,
            merges=implied_merges(pieces),
            unk_token=None if unk_id is None else pieces[int(unk_id)],
            fuse_unk=True,
            byte_fallback=True,
        )
    )
    backend.normalizer = normalizers.Replace(" ", SPACE)
    backend.decoder = decoders.Sequence(
        [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    return backend
