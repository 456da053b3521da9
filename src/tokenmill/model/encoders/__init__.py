"""Encoder-only models that turn text into vectors (sentence embeddings)."""

from tokenmill.model.encoders.sentence_encoder import (
    DEFAULT_ENCODER,
    PACKAGED_ENCODERS,
    EmbeddingInput,
    EmbeddingResult,
    PreparedInputs,
    SentenceEncoder,
    resolve_encoder,
)

__all__ = [
    "DEFAULT_ENCODER",
    "PACKAGED_ENCODERS",
    "EmbeddingInput",
    "EmbeddingResult",
    "PreparedInputs",
    "SentenceEncoder",
    "resolve_encoder",
]
