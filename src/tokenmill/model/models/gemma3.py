"""Gemma 3 (text) decoder over a paged KV cache.

Where it differs from Llama (models/llama.py):
- local layers attend within a sliding window, global layers to the whole context
  (`ArchConfig.sliding_window_layers`), and the two kinds use different RoPE bases;
- q and k are RMS-normed per head before RoPE (QK norm);
- the MLP is GeGLU: gelu(tanh approximation) of the gate times up;
- embeddings are multiplied by sqrt(hidden_size);
- every RMSNorm scales by (1 + weight), and each sublayer is normed before and after;
- the softmax scale is query_pre_attn_scalar ** -0.5 (`ArchConfig.query_scale`);
- the output head is the embedding matrix.

Weights use HF names with q/k/v and gate/up fused as in llama.py, so the same linear
layers (and their quantized replacements) apply.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from tokenmill.errors import ModelLoadError
from tokenmill.model.arch import ArchConfig
from tokenmill.model.layers.attention import PagedAttention
from tokenmill.model.layers.attention_metadata import AttentionMetadata
from tokenmill.model.layers.embedding import embedding
from tokenmill.model.layers.rmsnorm import GemmaRMSNorm
from tokenmill.model.layers.rotary import RotaryEmbedding
from tokenmill.model.models.llama import LlamaForCausalLM


class Gemma3Attention(nn.Module):
    """Fused qkv projection, per-head QK norm, RoPE, paged attention (windowed in local
    layers), output projection."""

    def __init__(self, arch: ArchConfig, layer: int) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads = arch.heads_of(layer), arch.num_kv_heads
        self.head_dim = arch.head_dim
        self.q_size, self.kv_size = self.num_heads * arch.head_dim, arch.kv_size
        self.qkv_proj = nn.Linear(
            arch.hidden_size, self.q_size + 2 * self.kv_size, bias=arch.attention_bias
        )
        self.o_proj = nn.Linear(self.q_size, arch.hidden_size, bias=False)
        self.q_norm = GemmaRMSNorm(arch.head_dim, arch.rms_norm_eps)
        self.k_norm = GemmaRMSNorm(arch.head_dim, arch.rms_norm_eps)
        self.sliding_window = arch.layer_window(layer)
        self.attn = PagedAttention(
            self.num_heads,
            arch.num_kv_heads,
            arch.head_dim,
            scale=arch.query_scale,
            sliding_window=self.sliding_window,
        )

    def forward(self, x, cos, sin, kv_cache, attn: AttentionMetadata) -> torch.Tensor:
        """x: (T, hidden); cos, sin: (T, 1, hd // 2) of this layer's RoPE base. Writes this
        step's K/V into kv_cache. Returns (T, hidden)."""
        t = x.shape[0]
        qkv = self.qkv_proj(x)  # (T, (nh + 2 nkv) hd)
        q, k, v = qkv.split((self.q_size, self.kv_size, self.kv_size), dim=-1)
        q = self.q_norm(q.view(t, self.num_heads, self.head_dim))  # (T, nh, hd)
        k = self.k_norm(k.view(t, self.num_kv_heads, self.head_dim))  # (T, nkv, hd)
        q = RotaryEmbedding.apply(q, cos, sin)
        k = RotaryEmbedding.apply(k, cos, sin)
        v = v.view(t, self.num_kv_heads, self.head_dim)
        return self.o_proj(self.attn(q, k, v, kv_cache, attn))


class Gemma3MLP(nn.Module):
    """GeGLU feed-forward with the gate and up projections fused."""

    def __init__(self, arch: ArchConfig, layer: int = 0) -> None:
        super().__init__()
        self.intermediate_size = arch.intermediate_size_of(layer)
        self.gate_up_proj = nn.Linear(arch.hidden_size, 2 * self.intermediate_size, bias=False)
        self.down_proj = nn.Linear(self.intermediate_size, arch.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (T, hidden). Returns (T, hidden)."""
        gate, up = self.gate_up_proj(x).split(self.intermediate_size, dim=-1)  # (T, ffn) x2
        return self.down_proj(F.gelu(gate, approximate="tanh") * up)


class Gemma3DecoderLayer(nn.Module):
    """Sandwich-norm block: each sublayer's input and output are normed, and the output
    is added to the residual stream."""

    def __init__(self, arch: ArchConfig, layer: int) -> None:
        """layer: this block's index, which picks its window and (pruned) shape."""
        super().__init__()
        hidden, eps = arch.hidden_size, arch.rms_norm_eps
        self.is_sliding = arch.layer_window(layer) is not None
        self.input_layernorm = GemmaRMSNorm(hidden, eps)
        self.self_attn = Gemma3Attention(arch, layer)
        self.post_attention_layernorm = GemmaRMSNorm(hidden, eps)
        self.pre_feedforward_layernorm = GemmaRMSNorm(hidden, eps)
        self.mlp = Gemma3MLP(arch, layer)
        self.post_feedforward_layernorm = GemmaRMSNorm(hidden, eps)

    def forward(self, x, cos, sin, kv_cache, attn: AttentionMetadata) -> torch.Tensor:
        """x: (T, hidden) residual stream. Returns the updated stream (T, hidden)."""
        h = self.self_attn(self.input_layernorm(x), cos, sin, kv_cache, attn)
        x = x + self.post_attention_layernorm(h)
        h = self.mlp(self.pre_feedforward_layernorm(x))
        return x + self.post_feedforward_layernorm(h)


class Gemma3ForCausalLM(nn.Module):
    """A decoder over one flat token dimension (no batch axis), reading and writing a
    paged KV cache whose layout `AttentionMetadata` describes. Same interface as
    LlamaForCausalLM."""

    def __init__(self, arch: ArchConfig, max_positions: int | None = None) -> None:
        """max_positions: how many positions the RoPE caches cover; defaults to the
        model's max_position_embeddings."""
        super().__init__()
        if not arch.tie_word_embeddings:
            raise ModelLoadError(
                "This Gemma 3 checkpoint has its own output head; Gemma 3 ties it to the "
                "embeddings, so the file is not one this model class can serve.",
                setting="model",
            )
        self.arch = arch
        max_positions = max_positions or arch.max_position_embeddings
        self.embed_tokens = embedding(arch.vocab_size, arch.hidden_size)
        self.embed_scale = math.sqrt(arch.hidden_size)
        self.layers = nn.ModuleList(Gemma3DecoderLayer(arch, i) for i in range(arch.num_layers))
        self.norm = GemmaRMSNorm(arch.hidden_size, arch.rms_norm_eps)
        self.rotary = RotaryEmbedding(
            arch.head_dim, max_positions, arch.rope_theta, arch.rope_scaling
        )
        self.rotary_local = RotaryEmbedding(
            arch.head_dim, max_positions, arch.rope_local_theta or arch.rope_theta, None
        )
        # Read by quant.int8.quantize_model_int8, which gives a tied head its own copy.
        self.lm_head = None

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        attn: AttentionMetadata,
        kv_caches: list[torch.Tensor],
    ) -> torch.Tensor:
        """input_ids, positions: (T,) int64, laid out as `attn` says. kv_caches[i]: layer
        i's (2, num_slots, nkv, hd) cache in the model dtype, written at
        `attn.slot_mapping`. Returns the final normed hidden states (T, hidden)."""
        h = self.embed_tokens(input_ids)  # (T, hidden)
        # As HF: the scale goes to float32, then to the weights' dtype, then multiplies.
        h = h * torch.tensor(self.embed_scale, dtype=torch.float32).to(h.dtype)
        rope_global = self.rotary.cos_sin(positions, h.dtype)  # (T, 1, hd // 2) x2
        rope_local = self.rotary_local.cos_sin(positions, h.dtype)
        for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
            cos, sin = rope_local if layer.is_sliding else rope_global
            h = layer(h, cos, sin, kv_cache, attn)
        return self.norm(h)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (N, hidden). Returns (N, vocab) float32 logits."""
        if self.lm_head is not None:
            return self.lm_head(hidden).float()
        return F.linear(hidden, self.embed_tokens.weight).float()

    @classmethod
    def fuse_weights(
        cls, arch: ArchConfig, named: Iterable[tuple[str, torch.Tensor]]
    ) -> Iterator[tuple[str, torch.Tensor]]:
        """HF-named tensors in, this module's state-dict entries out (q/k/v and gate/up
        fused exactly as for Llama)."""
        return LlamaForCausalLM.fuse_weights(arch, named)
