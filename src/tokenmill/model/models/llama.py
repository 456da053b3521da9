"""Llama-family decoder (Llama, SmolLM, Mistral, Qwen2) over a paged KV cache.

Weights are named as in HF checkpoints except that q/k/v and gate/up are stored fused
(`qkv_proj`, `gate_up_proj`); `fuse_weights` turns HF-named tensors into these names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from tokenmill.model.arch import ArchConfig
from tokenmill.model.kernels import inference_kernels
from tokenmill.model.layers.attention import PagedAttention
from tokenmill.model.layers.attention_metadata import AttentionMetadata
from tokenmill.model.layers.decode_stack import DecodeStack
from tokenmill.model.layers.embedding import embedding
from tokenmill.model.layers.rmsnorm import RMSNorm
from tokenmill.model.layers.rotary import RotaryEmbedding
from tokenmill.model.quant.blocks import concat_rows

# HF parameter suffix -> (our fused parameter suffix, shard index within it).
_FUSED = {
    "self_attn.q_proj": ("self_attn.qkv_proj", 0),
    "self_attn.k_proj": ("self_attn.qkv_proj", 1),
    "self_attn.v_proj": ("self_attn.qkv_proj", 2),
    "mlp.gate_proj": ("mlp.gate_up_proj", 0),
    "mlp.up_proj": ("mlp.gate_up_proj", 1),
}
# Leaves: float weights and biases, and an int8 checkpoint's per-row qweight / scale.
_SHARD = re.compile(
    r"(layers\.\d+)\.(self_attn\.[qkv]_proj|mlp\.(?:gate|up)_proj)\.(weight|bias|qweight|scale)"
)


class LlamaAttention(nn.Module):
    """Fused qkv projection, RoPE, paged attention, output projection."""

    def __init__(self, arch: ArchConfig, layer: int = 0) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads = arch.heads_of(layer), arch.num_kv_heads
        self.head_dim = arch.head_dim
        self.q_size, self.kv_size = self.num_heads * arch.head_dim, arch.kv_size
        self.qkv_proj = nn.Linear(
            arch.hidden_size, self.q_size + 2 * self.kv_size, bias=arch.attention_bias
        )
        self.o_proj = nn.Linear(self.q_size, arch.hidden_size, bias=False)
        self.attn = PagedAttention(self.num_heads, arch.num_kv_heads, arch.head_dim)

    def forward(self, x, cos, sin, kv_cache, attn: AttentionMetadata) -> torch.Tensor:
        """x: (T, hidden); cos, sin: (T, 1, hd // 2). Writes this step's K/V into
        kv_cache. Returns (T, hidden)."""
        t = x.shape[0]
        qkv = self.qkv_proj(x)  # (T, (nh + 2 nkv) hd)
        kernels = inference_kernels(qkv)
        if kernels is not None and qkv.dtype == torch.float32 and cos.dtype == torch.float32:
            # One pass: rotate q and k in place, store k and v at their slots.
            kernels.rope_write_kv(
                qkv, cos, sin, kv_cache, attn.slot_mapping, self.num_heads, self.num_kv_heads
            )
            q, k, v = qkv.split((self.q_size, self.kv_size, self.kv_size), dim=-1)
            q = q.view(t, self.num_heads, self.head_dim)
            k = k.view(t, self.num_kv_heads, self.head_dim)
            v = v.view(t, self.num_kv_heads, self.head_dim)
            return self.o_proj(self.attn.attend(q, k, v, kv_cache, attn))
        q, k, v = qkv.split((self.q_size, self.kv_size, self.kv_size), dim=-1)
        q = RotaryEmbedding.apply(q.view(t, self.num_heads, self.head_dim), cos, sin)
        k = RotaryEmbedding.apply(k.view(t, self.num_kv_heads, self.head_dim), cos, sin)
        v = v.view(t, self.num_kv_heads, self.head_dim)
        return self.o_proj(self.attn(q, k, v, kv_cache, attn))


class LlamaMLP(nn.Module):
    """SwiGLU feed-forward with the gate and up projections fused."""

    def __init__(self, arch: ArchConfig, layer: int = 0) -> None:
        super().__init__()
        self.intermediate_size = arch.intermediate_size_of(layer)
        self.gate_up_proj = nn.Linear(arch.hidden_size, 2 * self.intermediate_size, bias=False)
        self.down_proj = nn.Linear(self.intermediate_size, arch.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (T, hidden). Returns (T, hidden)."""
        gate_up = self.gate_up_proj(x)  # (T, 2 ffn)
        kernels = inference_kernels(gate_up)
        if kernels is not None and gate_up.dtype == torch.float32 and gate_up.dim() == 2:
            return self.down_proj(kernels.silu_mul(gate_up))
        gate, up = gate_up.split(self.intermediate_size, dim=-1)  # (T, ffn) x2
        return self.down_proj(F.silu(gate) * up)


class LlamaDecoderLayer(nn.Module):
    """Pre-norm block; the residual add is fused into the next norm."""

    def __init__(self, arch: ArchConfig, layer: int = 0) -> None:
        """layer: this block's index, which picks its shape in a pruned model."""
        super().__init__()
        self.input_layernorm = RMSNorm(arch.hidden_size, arch.rms_norm_eps)
        self.self_attn = LlamaAttention(arch, layer)
        self.post_attention_layernorm = RMSNorm(arch.hidden_size, arch.rms_norm_eps)
        self.mlp = LlamaMLP(arch, layer)

    def forward(self, x, residual, cos, sin, kv_cache, attn):
        """x: (T, hidden) output of the previous layer, residual: (T, hidden) or None for
        the first layer. Returns (output, residual), whose sum is this layer's output."""
        if residual is None:
            residual = x
            h = self.input_layernorm(x)
        else:
            h, residual = self.input_layernorm(x, residual)
        h = self.self_attn(h, cos, sin, kv_cache, attn)
        h, residual = self.post_attention_layernorm(h, residual)
        return self.mlp(h), residual


class LlamaForCausalLM(nn.Module):
    """A decoder over one flat token dimension (no batch axis), reading and writing a
    paged KV cache whose layout `AttentionMetadata` describes."""

    def __init__(self, arch: ArchConfig, max_positions: int | None = None) -> None:
        """max_positions: how many positions the RoPE cache covers; defaults to the
        model's max_position_embeddings."""
        super().__init__()
        self.arch = arch
        self.embed_tokens = embedding(arch.vocab_size, arch.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(arch, i) for i in range(arch.num_layers))
        self.norm = RMSNorm(arch.hidden_size, arch.rms_norm_eps)
        self.rotary = RotaryEmbedding(
            arch.head_dim,
            max_positions or arch.max_position_embeddings,
            arch.rope_theta,
            arch.rope_scaling,
        )
        self.lm_head = (
            None
            if arch.tie_word_embeddings
            else nn.Linear(arch.hidden_size, arch.vocab_size, bias=False)
        )

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
        cos, sin = self.rotary.cos_sin(positions, h.dtype)  # (T, 1, hd // 2) x2
        stack = self._decode_stack()
        stacked = stack(h, cos, sin, kv_caches, attn) if stack is not None else None
        if stacked is not None:
            h, residual = stacked
        else:
            residual = None
            for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
                h, residual = layer(h, residual, cos, sin, kv_cache, attn)
        h, _ = self.norm(h, residual)
        return h

    def _decode_stack(self) -> DecodeStack | None:
        """The native decode stack over these layers, built on first use (the weights
        are final by then) and kept; None where it cannot stand in for them."""
        if not hasattr(self, "_stack"):
            self._stack = DecodeStack.of(self.layers)
        return self._stack

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (N, hidden). Returns (N, vocab) float32 logits."""
        if self.lm_head is not None:
            return self.lm_head(hidden).float()
        return F.linear(hidden, self.embed_tokens.weight).float()

    @classmethod
    def fuse_weights(
        cls, arch: ArchConfig, named: Iterable[tuple[str, torch.Tensor]]
    ) -> Iterator[tuple[str, torch.Tensor]]:
        """HF-named tensors ("model.layers.3.self_attn.q_proj.weight", ...) in, this
        module's state-dict entries out. Shards of a fused weight are held only until
        the last one arrives (block weights fuse too: see `concat_rows`). A tied
        checkpoint's lm_head is dropped."""
        pending: dict[str, dict[int, torch.Tensor]] = {}
        for name, tensor in named:
            name = name.removeprefix("model.")
            if name == "lm_head.weight" and arch.tie_word_embeddings:
                continue
            match = _SHARD.fullmatch(name)
            if match is None:
                yield name, tensor
                continue
            layer, suffix, leaf = match.groups()
            fused, index = _FUSED[suffix]
            target = f"{layer}.{fused}.{leaf}"
            shards = pending.setdefault(target, {})
            shards[index] = tensor
            if len(shards) == (3 if fused.endswith("qkv_proj") else 2):
                yield target, concat_rows([shards[i] for i in sorted(shards)])
                del pending[target]
        if pending:
            raise ValueError(f"Checkpoint is missing shards of {sorted(pending)}.")
