"""One native call for a Llama-family decoder stack on a decode-only step.

At batch 1 the Python around a layer's ~10 native calls (module calls, views, argument
checks) costs as much as the arithmetic: 30 layers of it were ~9 ms of a ~40 ms step on
SmolLM2 (docs/performance.md). `llama_decode_stack` makes the same native calls, in the
same order, from C++, so its output is the same bits as the layer-by-layer path; this
module decides when it applies and gathers its arguments once.
"""

from __future__ import annotations

import torch
from torch import nn

from tokenmill.model.kernels import cpu_kernels, inference_kernels
from tokenmill.model.layers.attention_metadata import AttentionMetadata
from tokenmill.model.quant.blocks import BlockLinear


class DecodeStack:
    """The layers' weights laid out for `llama_decode_stack`. Immutable after init."""

    def __init__(self, layers: nn.ModuleList, weights: list[torch.Tensor], types: list[int]):
        first = layers[0]
        self.num_heads = first.self_attn.num_heads
        self.num_kv_heads = first.self_attn.num_kv_heads
        self.scale = first.self_attn.attn.scale
        self.eps = first.input_layernorm.eps
        self.weights = weights
        self.types = types

    @classmethod
    def of(cls, layers: nn.ModuleList) -> DecodeStack | None:
        """The stack for these Llama decoder layers, or None where the native call cannot
        stand in for them exactly: no kernels, a projection that is not one block matrix
        without bias, float norm weights of another dtype, a sliding window, or layers
        whose shapes differ (a pruned model)."""
        kernels = cpu_kernels()
        if kernels is None or not hasattr(kernels, "llama_decode_stack") or not len(layers):
            return None
        weights: list[torch.Tensor] = []
        types: list[int] = []
        first = layers[0]
        for layer in layers:
            attn, mlp = layer.self_attn, layer.mlp
            if (
                attn.num_heads != first.self_attn.num_heads
                or attn.attn.window is not None
                or attn.attn.scale != first.self_attn.attn.scale
                or layer.input_layernorm.eps != first.input_layernorm.eps
                or layer.post_attention_layernorm.eps != first.input_layernorm.eps
            ):
                return None
            projections = (attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj)
            if not all(
                isinstance(p, BlockLinear) and len(p.parts) == 1 and p.bias is None
                for p in projections
            ):
                return None
            norms = (layer.input_layernorm.weight, layer.post_attention_layernorm.weight)
            if any(w.dtype != torch.float32 or not w.is_contiguous() for w in norms):
                return None
            qkv, o, gate_up, down = (p.parts[0] for p in projections)
            weights += [norms[0], qkv.data, o.data, norms[1], gate_up.data, down.data]
            types += [qkv.qtype, o.qtype, gate_up.qtype, down.qtype]
        return cls(layers, weights, types)

    def __call__(
        self,
        h: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        kv_caches: list[torch.Tensor],
        attn: AttentionMetadata,
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Every layer on h (T, hidden) float32 for a step of decodes only: returns
        (output, residual) as the layer loop would, after writing each layer's K/V into
        kv_caches. None, having done nothing, for any other step."""
        if (
            attn.prefills
            or attn.block_tables is None
            or attn.decode_lens is None
            or h.dtype != torch.float32
            or cos.dtype != torch.float32
            or inference_kernels(h) is None
        ):
            return None
        out, residual = cpu_kernels().llama_decode_stack(
            h,
            self.weights,
            self.types,
            cos,
            sin,
            kv_caches,
            attn.slot_mapping,
            attn.block_tables,
            attn.decode_lens,
            attn.block_size,
            self.scale,
            self.num_heads,
            self.num_kv_heads,
            self.eps,
        )
        return out, residual
