"""The engine's settings: which model and how, the KV cache, the scheduler.

Values discovered at run time (the number of KV blocks, the EOS id) live on the objects
that discover them, not here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tokenmill.config.setting import setting
from tokenmill.errors import ConfigError

DTYPES = ("auto", "float32", "bfloat16")
QUANTIZATIONS = ("int8", "auto")


@dataclass(frozen=True)
class ModelConfig:
    """Which weights to serve, in which precision, under which name."""

    model: str | None = setting(
        None,
        "A packaged model's short name, a .gguf file or a Hugging Face model directory. "
        "Default: the packaged smollm2-135m-instruct.",
        metavar="NAME|PATH",
    )
    dtype: str = setting(
        "auto",
        "Weights and activations precision; auto picks the fastest exact path on this CPU "
        "(the startup line, /version and /v1/models say which).",
        choices=DTYPES,
    )
    quantization: str | None = setting(
        None,
        "Lossy weight quantization: int8 stores weights as int8 and computes with per-row "
        "int8 activations (+3.7% perplexity on the default model); auto keeps a GGUF's own "
        "4-8 bit blocks where the native kernels serve them (with --dtype auto), else int8; "
        "none keeps the model's own weights.",
        choices=QUANTIZATIONS,
        none_words=("none", ""),
    )
    batch_invariant: bool = setting(
        False,
        "Make a request's result independent of what shares its step (true/false). Only "
        "CPUs with AMX differ: there batches of more than 8 rows run on the tile unit, whose "
        "bits differ from the smaller batches' path; true keeps every batch on the AVX-512 "
        "kernels (prefill and large batches about 2x slower). Applies to the whole process.",
    )
    max_model_len: int | None = setting(
        None,
        "Context length to serve (prompt + output tokens). Default: the model's own.",
        metavar="TOKENS",
    )
    served_model_name: str | None = setting(
        None,
        "The name clients pass as `model`. Default: the model's short or file name.",
        metavar="NAME",
    )
    chat_template: str | None = setting(
        None,
        "A Jinja chat template file to render chats with instead of the model's own. A "
        "template that takes `tools` and spells calls as <tool_call> tags (Hermes, Qwen) "
        "renders tool definitions and tool turns itself.",
        metavar="FILE",
        none_words=("none", ""),
    )
    generation_config: str = setting(
        "auto",
        "Default sampling for requests that leave it unset: auto takes the model's "
        "generation_config.json or tokenmill's table of packaged models; none uses "
        "OpenAI's defaults (temperature 1, top_p 1).",
        choices=("auto", "none"),
    )
    default_max_tokens: int = setting(
        1024,
        "New tokens at most when a request does not say (max_tokens omitted); never more "
        "than the context leaves.",
        metavar="N",
    )

    def __post_init__(self) -> None:
        if self.quantization is not None and self.quantization not in QUANTIZATIONS:
            raise ConfigError(
                f"quantization must be one of {', '.join(QUANTIZATIONS)} or none, got "
                f"{self.quantization!r}.",
                setting="quantization",
            )
        if self.dtype not in DTYPES:
            raise ConfigError(
                f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}.", setting="dtype"
            )
        if self.max_model_len is not None and self.max_model_len < 16:
            raise ConfigError("max_model_len must be at least 16.", setting="max_model_len")
        if self.default_max_tokens < 1:
            raise ConfigError(
                "default_max_tokens must be at least 1.", setting="default_max_tokens"
            )


@dataclass(frozen=True)
class CacheConfig:
    """The paged KV cache."""

    block_size: int = setting(
        16,
        "Tokens per KV block; also the prefix cache's granularity (a power of two).",
        metavar="TOKENS",
    )
    memory_gib: float = setting(
        1.0,
        "Memory for the KV cache; it bounds how many tokens can be in flight at once.",
        name="kv_cache_memory_gib",
        metavar="GIB",
    )
    num_blocks: int | None = setting(
        None,
        "Exact KV block count, overriding the memory budget.",
        name="num_kv_blocks",
        hidden=True,
    )
    enable_prefix_caching: bool = setting(
        True, "Reuse the KV cache of shared prompt prefixes (true/false)."
    )
    prefault: bool = setting(
        True,
        "Commit the KV cache's memory at start (true/false), so the process's resident "
        "memory is its working size from the first request and a machine short of memory "
        "fails at start. false commits pages as blocks are first used: resident memory "
        "then climbs towards the full cache over a long run.",
        name="kv_cache_prefault",
    )
    dtype: str = setting(
        "auto",
        "K/V storage precision; auto is bfloat16 under int8 quantization (it halves what "
        "decode attention reads), else the model's dtype.",
        name="kv_cache_dtype",
        choices=DTYPES,
    )

    def __post_init__(self) -> None:
        if self.block_size < 1 or self.block_size & (self.block_size - 1):
            raise ConfigError("block_size must be a power of two.", setting="block_size")
        if self.memory_gib <= 0:
            raise ConfigError(
                "kv_cache_memory_gib must be positive.", setting="kv_cache_memory_gib"
            )
        if self.dtype not in DTYPES:
            raise ConfigError(
                f"kv_cache_dtype must be one of {', '.join(DTYPES)}.", setting="kv_cache_dtype"
            )
        if self.num_blocks is not None and self.num_blocks < 2:
            raise ConfigError("num_kv_blocks must be at least 2.", setting="num_kv_blocks")


@dataclass(frozen=True)
class SchedulerConfig:
    """Continuous batching limits."""

    max_num_seqs: int = setting(64, "Most sequences decoded together in one batch.", metavar="N")
    max_num_batched_tokens: int = setting(
        512,
        "Most tokens computed in one engine step (long prompts are prefilled in chunks of "
        "this size beside the running decodes).",
        metavar="N",
    )
    max_prefill_tokens_when_busy: int | None = setting(
        32,
        "Most prompt tokens computed in one step while the engine holds more than one "
        "sequence (running or waiting): prompts are prefilled in chunks this size beside "
        "the decodes, so a stream's next token and a new request's first token wait for one "
        "short step, not for a long prompt or a burst of them. A lone request may take "
        "max_num_batched_tokens. none: only max_num_batched_tokens bounds a step.",
        metavar="N",
        none_words=("none",),
    )
    max_queue: int | None = setting(
        256,
        "Sequences allowed to wait for a batch slot (a request with n=4 counts 4); more are "
        "refused with HTTP 429 and Retry-After, and a request that could never fit with "
        "HTTP 400. none: no limit (the offline LLM's default).",
        metavar="N",
        none_words=("none",),
    )

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1:
            raise ConfigError("max_num_seqs must be at least 1.", setting="max_num_seqs")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ConfigError(
                "max_num_batched_tokens must be >= max_num_seqs.", setting="max_num_batched_tokens"
            )
        cap = self.max_prefill_tokens_when_busy
        if cap is not None and cap < 1:
            raise ConfigError(
                "max_prefill_tokens_when_busy must be at least 1 (or none).",
                setting="max_prefill_tokens_when_busy",
            )
        if self.max_queue is not None and self.max_queue < 0:
            raise ConfigError("max_queue must be >= 0.", setting="max_queue")


SPECULATIVE_MODES = ("off", "ngram")


@dataclass(frozen=True)
class SpeculativeConfig:
    """Speculative decoding: propose several next tokens cheaply, verify them in one
    forward pass, keep the prefix the model agrees with (docs/speculative.md)."""

    mode: str = setting(
        "off",
        "off, or ngram: prompt lookup (the tokens that followed the last n-gram's earlier "
        "occurrence in the prompt and output), verified in one pass. Greedy output is "
        "unchanged and sampling keeps its distribution. draft:MODEL: a second, smaller "
        "model with the same vocabulary (anything --model accepts) proposes greedily.",
        name="speculative",
        metavar="off|ngram|draft:MODEL",
    )
    num_tokens: int = setting(
        4, "Tokens proposed per verify step.", name="num_speculative_tokens", metavar="K"
    )
    ngram_max: int = setting(
        3,
        "Longest n-gram looked up (the search tries n from here down to the minimum).",
        name="speculative_ngram_max",
        metavar="N",
    )
    ngram_min: int = setting(
        1, "Shortest n-gram looked up.", name="speculative_ngram_min", metavar="N"
    )
    window: int = setting(
        8,
        "Auto-off: proposals of a request counted in its running acceptance rate.",
        name="speculative_window",
        metavar="N",
    )
    min_acceptance: float = setting(
        0.3,
        "Auto-off: a request stops proposing once its last `speculative_window` proposals "
        "accepted less than this fraction of their tokens (0 never turns off).",
        name="speculative_min_acceptance",
        metavar="FRACTION",
    )

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    @property
    def draft_model(self) -> str | None:
        """The draft model's name or path in draft:MODEL mode; None otherwise."""
        return self.mode.removeprefix("draft:") if self.mode.startswith("draft:") else None

    def __post_init__(self) -> None:
        if self.mode.startswith("draft:"):
            if not self.mode.removeprefix("draft:").strip():
                raise ConfigError(
                    "speculative=draft:MODEL needs a model after 'draft:' (a packaged name, "
                    "a .gguf path or a Hugging Face directory).",
                    setting="speculative",
                )
        elif self.mode not in SPECULATIVE_MODES:
            raise ConfigError(
                f"speculative must be off, ngram or draft:MODEL, got {self.mode!r}.",
                setting="speculative",
            )
        if not 1 <= self.num_tokens <= 16:
            raise ConfigError(
                "num_speculative_tokens must be in [1, 16].", setting="num_speculative_tokens"
            )
        if not 1 <= self.ngram_min <= self.ngram_max:
            raise ConfigError(
                "speculative_ngram_min must be >= 1 and <= speculative_ngram_max.",
                setting="speculative_ngram_min",
            )
        if self.window < 1:
            raise ConfigError(
                "speculative_window must be at least 1.", setting="speculative_window"
            )
        if not 0.0 <= self.min_acceptance <= 1.0:
            raise ConfigError(
                "speculative_min_acceptance must be in [0, 1].",
                setting="speculative_min_acceptance",
            )


MAX_N = 128
"""The API's own bound on n (OpenAI's); --max-n may only lower it."""


@dataclass(frozen=True)
class LimitsConfig:
    """What one request may ask of the engine. Past these it gets HTTP 400 naming the
    limit, before any work is done for it."""

    max_n: int = setting(
        16,
        "Most completions one prompt may ask for (n, and best_of). Each is a sequence that "
        "takes a batch slot.",
        metavar="N",
    )
    max_stop_strings: int = setting(32, "Most stop strings one request may give.", metavar="N")
    max_stop_string_chars: int = setting(
        256, "Longest stop string allowed, in characters.", metavar="CHARS"
    )

    def __post_init__(self) -> None:
        if not 1 <= self.max_n <= MAX_N:
            raise ConfigError(f"max_n must be in [1, {MAX_N}].", setting="max_n")
        for name in ("max_stop_strings", "max_stop_string_chars"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1.", setting=name)


@dataclass(frozen=True)
class EngineConfig:
    """Everything the engine needs; each component takes only its slice."""

    model: ModelConfig = field(default_factory=ModelConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    speculative: SpeculativeConfig = field(default_factory=SpeculativeConfig)
    num_threads: int | None = setting(
        None,
        "CPU threads for model compute. Default: all cores but one, left to the HTTP side.",
        metavar="N",
    )

    def __post_init__(self) -> None:
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError("num_threads must be at least 1.", setting="num_threads")
