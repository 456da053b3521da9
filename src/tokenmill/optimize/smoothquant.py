"""int8 W8A8 with SmoothQuant-style activation smoothing (Xiao et al., 2023).

A few input channels of a projection carry activations far larger than the rest, and
per-row int8 activation scales then waste most levels on them. Smoothing divides
channel j of the activation by s_j and multiplies column j of the weight by s_j, which
leaves the product unchanged and moves the difficulty into the weights, quantized per
output channel:

    s_j = max|X_j| ** alpha / max|W_j| ** (1 - alpha)

The division is folded into the operation that produces X, so it costs nothing at run
time: the RMSNorm weights before qkv_proj and gate_up_proj, and the up_proj rows before
down_proj (silu(gate) * up is linear in up). o_proj's input comes from attention and is
not smoothed. Activation maxima come from a calibration text.
"""

from __future__ import annotations

import torch
from torch import nn

from tokenmill.model.models.llama import LlamaForCausalLM
from tokenmill.model.quant.int8 import quantize_model_int8


def smoothing_scales(act_max: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """(in,) scales s for activations maxima act_max (in,) and weight (out, in)."""
    w_max = weight.abs().amax(dim=0).clamp_min(1e-5)
    s = act_max.clamp_min(1e-5).pow(alpha) / w_max.pow(1 - alpha)
    return s.clamp_min(1e-5)


@torch.no_grad()
def smooth(model: LlamaForCausalLM, act_max: dict[str, torch.Tensor], alpha: float) -> None:
    """Applies the smoothing in place (float weights): the model computes the same
    function up to float rounding. act_max: channel_absmax's output for this model."""
    for i, layer in enumerate(model.layers):
        pairs: list[tuple[str, nn.Module, nn.Linear]] = [
            ("self_attn.qkv_proj", layer.input_layernorm, layer.self_attn.qkv_proj),
            ("mlp.gate_up_proj", layer.post_attention_layernorm, layer.mlp.gate_up_proj),
        ]
        for name, norm, linear in pairs:
            s = smoothing_scales(act_max[f"layers.{i}.{name}"], linear.weight, alpha)
            norm.weight.div_(s)
            linear.weight.mul_(s)
        mlp = layer.mlp
        down = mlp.down_proj
        s = smoothing_scales(act_max[f"layers.{i}.mlp.down_proj"], down.weight, alpha)
        up = mlp.gate_up_proj.weight[mlp.intermediate_size :]  # (ffn, hidden) rows of up
        up.div_(s[:, None])
        down.weight.mul_(s)


def smoothquant_int8(
    model: LlamaForCausalLM, act_max: dict[str, torch.Tensor], alpha: float
) -> None:
    """Smooth (if alpha > 0) then quantize every projection and the output head to int8,
    in place. alpha = 0 is plain per-channel int8 (no smoothing), for comparison."""
    if alpha > 0:
        smooth(model, act_max, alpha)
    quantize_model_int8(model)
