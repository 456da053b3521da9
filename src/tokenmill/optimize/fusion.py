"""What the engine fuses when it serves a model: listed in every quantize report."""

from __future__ import annotations

from torch import nn

from tokenmill.model.kernels import cpu_kernels
from tokenmill.model.quant.int8 import Int8Linear


def fused_operations(model: nn.Module) -> list[str]:
    """The fusions in effect for `model` (a loaded LlamaForCausalLM) on this machine,
    read from its modules and from whether the native kernels built here."""
    layer = model.layers[0]
    kernels = cpu_kernels() is not None
    out = []
    if hasattr(layer.self_attn, "qkv_proj"):
        out.append("q, k and v projections: one GEMM (qkv_proj)")
    if hasattr(layer.mlp, "gate_up_proj"):
        out.append("MLP gate and up projections: one GEMM (gate_up_proj)")
    out.append("residual add fused into the following RMSNorm (one pass over activations)")
    out.append("RoPE cos/sin computed once per step for all layers")
    if isinstance(layer.self_attn.qkv_proj, Int8Linear):
        where = "one native kernel" if kernels else "ATen ops (kernels not built here)"
        out.append(
            "int8 projections: per-row activation quantization, int8 GEMM, dequantization "
            f"and bias in {where}"
        )
        out.append(
            "SmoothQuant scales folded into RMSNorm weights and up_proj rows (no run-time cost)"
        )
    if kernels:
        out.append("decode attention: one native kernel reading the paged K/V in place")
    return out
