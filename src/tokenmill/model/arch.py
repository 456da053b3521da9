"""The shape of a decoder-only transformer, read from a GGUF's metadata or a HF config.json.

`ArchConfig` is what the model classes are built from; both loaders produce one, so the
model code never sees where its weights came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from tokenmill.errors import ModelLoadError

ROPE_SCALING_KINDS = ("linear", "llama3", "freq_factors")
# Gemma GGUFs name no end-of-turn id, yet chat turns end with this token and HF's
# generation_config stops on it.
_END_OF_TURN_TOKENS = ("<end_of_turn>",)
# Gemma 3 interleaves five sliding-window layers with one global layer. llama.cpp
# hard-codes this (and the local RoPE base) rather than writing it into the file.
_GEMMA3_GLOBAL_EVERY = 6
_GEMMA3_LOCAL_ROPE_THETA = 10000.0


@dataclass(frozen=True)
class RopeScaling:
    """How rotary frequencies are stretched beyond the pretraining context."""

    kind: str
    """"linear" (divide every frequency by `factor`), "llama3" (Llama 3.1's smooth
    per-wavelength blend) or "freq_factors" (llama.cpp's `rope_freqs` tensor: divide
    frequency i by `freq_factors[i]`)."""
    factor: float = 1.0
    low_freq_factor: float = 1.0
    """llama3 only: wavelengths above original_max_position_embeddings / low_freq_factor
    are scaled fully."""
    high_freq_factor: float = 4.0
    """llama3 only: wavelengths below original_max_position_embeddings / high_freq_factor
    are kept."""
    original_max_position_embeddings: int = 8192
    """llama3 only: the context length the model was pretrained with."""
    freq_factors: tuple[float, ...] = ()
    """freq_factors only: one divisor per rotary frequency (head_dim // 2 of them)."""

    def __post_init__(self) -> None:
        if self.kind not in ROPE_SCALING_KINDS:
            raise ModelLoadError(
                f"RoPE scaling {self.kind!r} is not supported; supported: {ROPE_SCALING_KINDS}."
            )
        if self.factor <= 0:
            raise ModelLoadError("RoPE scaling factor must be positive.")

    @classmethod
    def from_hf(cls, params: Mapping[str, Any] | None) -> RopeScaling | None:
        """From a config.json `rope_scaling` / `rope_parameters` dict; None when there is
        no scaling ("default" type or no dict)."""
        if not params:
            return None
        kind = params.get("rope_type", params.get("type", "default"))
        if kind == "default":
            return None
        return cls(
            kind=kind,
            factor=float(params.get("factor", 1.0)),
            low_freq_factor=float(params.get("low_freq_factor", 1.0)),
            high_freq_factor=float(params.get("high_freq_factor", 4.0)),
            original_max_position_embeddings=int(
                params.get("original_max_position_embeddings", 8192)
            ),
        )


def _window_pattern(period: int, num_layers: int) -> tuple[bool, ...]:
    """Every `period`-th layer global, the rest sliding-window (llama.cpp's reading of an
    integer pattern; 0 means every layer slides)."""
    return tuple(period == 0 or (i + 1) % period != 0 for i in range(num_layers))


@dataclass(frozen=True)
class ArchConfig:
    """Hyperparameters of a decoder: the Llama family (Llama, SmolLM, Mistral, Qwen2) and
    Gemma 3."""

    architecture: str
    """Lower-case family name ("llama", "qwen2"); picks the model class."""
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float
    rms_norm_eps: float
    max_position_embeddings: int
    """The context length the weights were trained for."""
    tie_word_embeddings: bool
    """The output projection reuses the token embedding matrix."""
    attention_bias: bool = False
    """q, k and v projections carry a bias (Qwen2)."""
    rope_scaling: RopeScaling | None = None
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    """Every id that ends a generation (EOS, end-of-turn)."""
    sliding_window: int | None = None
    """In a sliding-window layer a query at position p sees keys at positions
    p - sliding_window + 1 .. p (HF's convention)."""
    sliding_window_layers: tuple[bool, ...] = ()
    """One entry per layer: True where the layer attends within `sliding_window`. Empty:
    every layer is global."""
    rope_local_theta: float | None = None
    """RoPE base of the sliding-window layers when it differs from `rope_theta` (Gemma 3);
    those layers use no RoPE scaling."""
    query_scale: float | None = None
    """Multiplier of q.k before the softmax; None means head_dim ** -0.5."""
    layer_num_heads: tuple[int, ...] = ()
    """Query heads of each layer where a pruned model has fewer in some layers; empty:
    every layer has `num_heads`. Key/value heads stay `num_kv_heads` everywhere, so the
    KV cache keeps one shape."""
    layer_intermediate_sizes: tuple[int, ...] = ()
    """MLP width of each layer where a pruned model varies it; empty: `intermediate_size`
    everywhere."""

    def __post_init__(self) -> None:
        for heads in self.layer_num_heads or (self.num_heads,):
            if heads < 1 or heads % self.num_kv_heads:
                raise ModelLoadError(
                    f"a layer's query heads ({heads}) must be a positive multiple of "
                    f"num_kv_heads ({self.num_kv_heads})."
                )
        for name, values in (
            ("layer_num_heads", self.layer_num_heads),
            ("layer_intermediate_sizes", self.layer_intermediate_sizes),
        ):
            if values and len(values) != self.num_layers:
                raise ModelLoadError(
                    f"{name} has {len(values)} entries for {self.num_layers} layers."
                )
        if self.head_dim % 2:
            raise ModelLoadError(f"head_dim must be even for RoPE, got {self.head_dim}.")
        if self.sliding_window_layers and len(self.sliding_window_layers) != self.num_layers:
            raise ModelLoadError(
                f"sliding_window_layers has {len(self.sliding_window_layers)} entries for "
                f"{self.num_layers} layers."
            )
        if any(self.sliding_window_layers) and not (self.sliding_window or 0) > 0:
            raise ModelLoadError("Sliding-window layers need a positive sliding_window.")

    def layer_window(self, layer: int) -> int | None:
        """The attention window of layer `layer`, or None for a global layer."""
        if self.sliding_window_layers and self.sliding_window_layers[layer]:
            return self.sliding_window
        return None

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    def heads_of(self, layer: int) -> int:
        """Query heads of `layer` (0-based)."""
        return self.layer_num_heads[layer] if self.layer_num_heads else self.num_heads

    def intermediate_size_of(self, layer: int) -> int:
        """MLP width of `layer` (0-based)."""
        if self.layer_intermediate_sizes:
            return self.layer_intermediate_sizes[layer]
        return self.intermediate_size

    @classmethod
    def from_gguf(
        cls,
        metadata: Mapping[str, Any],
        tensor_names: AbstractSet[str],
        rope_freq_factors: tuple[float, ...] = (),
    ) -> ArchConfig:
        """From GGUF key/values (llama.cpp names), the file's tensor names (which say
        whether biases and an untied output exist) and its `rope_freqs` tensor, if any."""
        arch = str(metadata["general.architecture"])

        def key(name: str, default: Any = None) -> Any:
            return metadata.get(f"{arch}.{name}", default)

        hidden = int(key("embedding_length"))
        heads = int(key("attention.head_count"))
        vocab = key("vocab_size")
        if vocab is None:
            vocab = len(metadata["tokenizer.ggml.tokens"])
        rope_scaling = None
        scaling_kind = key("rope.scaling.type")
        if rope_freq_factors:
            rope_scaling = RopeScaling(kind="freq_factors", freq_factors=rope_freq_factors)
        elif scaling_kind not in (None, "none"):
            rope_scaling = RopeScaling(
                kind=str(scaling_kind), factor=float(key("rope.scaling.factor", 1.0))
            )
        eos_ids = [
            int(metadata[k])
            for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id")
            if metadata.get(k) is not None
        ]
        tokens = metadata.get("tokenizer.ggml.tokens") or []
        eos_ids += [tokens.index(t) for t in _END_OF_TURN_TOKENS if t in tokens]
        bos = metadata.get("tokenizer.ggml.bos_token_id")
        layers = int(key("block_count"))
        head_dim = int(key("attention.key_length", hidden // heads))
        window = key("attention.sliding_window")
        pattern = key("attention.sliding_window_pattern")
        local_theta = key("rope.freq_base_swa")
        scale = key("attention.scale")
        if arch == "gemma3":
            pattern = _GEMMA3_GLOBAL_EVERY if pattern is None else pattern
            local_theta = _GEMMA3_LOCAL_ROPE_THETA if local_theta is None else local_theta
            if scale is None:
                # Gemma 3 scales by query_pre_attn_scalar ** -0.5, which the file omits:
                # hidden / heads for the 27B (62 layers), head_dim otherwise (as llama.cpp).
                scale = (hidden // heads if layers == 62 else head_dim) ** -0.5
        if isinstance(pattern, int):
            pattern = _window_pattern(pattern, layers)
        return cls(
            architecture=arch,
            vocab_size=int(vocab),
            hidden_size=hidden,
            intermediate_size=int(key("feed_forward_length")),
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=int(key("attention.head_count_kv", heads)),
            head_dim=head_dim,
            rope_theta=float(key("rope.freq_base", 10000.0)),
            rms_norm_eps=float(key("attention.layer_norm_rms_epsilon", 1e-6)),
            max_position_embeddings=int(key("context_length", 2048)),
            tie_word_embeddings="output.weight" not in tensor_names,
            attention_bias="blk.0.attn_q.bias" in tensor_names,
            rope_scaling=rope_scaling,
            bos_token_id=None if bos is None else int(bos),
            eos_token_ids=tuple(dict.fromkeys(eos_ids)),
            sliding_window=None if not window else int(window),
            sliding_window_layers=tuple(bool(x) for x in pattern) if window and pattern else (),
            rope_local_theta=None if local_theta is None else float(local_theta),
            query_scale=None if scale is None else float(scale),
        )

    @classmethod
    def from_hf(
        cls, config: Mapping[str, Any], generation_config: Mapping[str, Any] | None = None
    ) -> ArchConfig:
        """From a HF config.json dict (and generation_config.json, whose eos ids are
        added to the config's)."""
        architectures = config.get("architectures") or []
        arch = str(config.get("model_type") or (architectures[0] if architectures else ""))
        hidden = int(config["hidden_size"])
        heads = int(config["num_attention_heads"])
        rope_params = config.get("rope_parameters") or config.get("rope_scaling") or {}
        local_params: Mapping[str, Any] = {}
        if "full_attention" in rope_params:  # per layer type (transformers 5, Gemma 3)
            local_params = rope_params.get("sliding_attention") or {}
            rope_params = rope_params["full_attention"] or {}
        rope_theta = config.get("rope_theta", rope_params.get("rope_theta", 10000.0))
        local_theta = config.get("rope_local_base_freq", local_params.get("rope_theta"))
        layers = int(config["num_hidden_layers"])
        window = config.get("sliding_window")
        layer_types = config.get("layer_types")
        if layer_types:
            pattern = tuple(t == "sliding_attention" for t in layer_types)
        elif arch.lower().startswith("gemma3"):
            period = config.get("sliding_window_pattern") or _GEMMA3_GLOBAL_EVERY
            pattern = _window_pattern(int(period), layers)
        else:
            pattern = ()
        if not any(pattern):
            window, pattern = None, ()
        scalar = config.get("query_pre_attn_scalar")
        eos_ids: list[int] = []
        for source in (config, generation_config or {}):
            eos = source.get("eos_token_id")
            eos_ids.extend([eos] if isinstance(eos, int) else (eos or []))
        bos = config.get("bos_token_id")
        return cls(
            layer_num_heads=tuple(config.get("num_attention_heads_per_layer") or ()),
            layer_intermediate_sizes=tuple(config.get("intermediate_size_per_layer") or ()),
            architecture=arch.lower(),
            vocab_size=int(config["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(config["intermediate_size"]),
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            rope_theta=float(rope_theta),
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
            max_position_embeddings=int(config.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            attention_bias=bool(config.get("attention_bias", arch.lower() == "qwen2")),
            rope_scaling=RopeScaling.from_hf(rope_params),
            bos_token_id=None if bos is None else int(bos),
            eos_token_ids=tuple(dict.fromkeys(int(e) for e in eos_ids)),
            sliding_window=None if window is None else int(window),
            sliding_window_layers=pattern,
            rope_local_theta=None if local_theta is None else float(local_theta),
            query_scale=None if scalar is None else float(scalar) ** -0.5,
        )
