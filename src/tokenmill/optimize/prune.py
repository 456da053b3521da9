"""Structured pruning: remove attention heads or MLP channels by measured importance.

Importance scores, measured on the calibration windows with the float model:

- a query head h of a layer: the mean squared norm of its contribution to the residual
  stream, ||x_h W_o[:, h]^T||^2, where x_h is the head's attention output;
- an MLP channel j: mean(z_j^2) * ||W_down[:, j]||^2, where z = silu(gate) * up, the
  expected squared contribution of the channel to the layer's output.

Scores are divided by their layer's mean so layers compare, then the lowest-scoring
`amount` of all heads (or channels) go. Heads are removed in slices: one from every
key/value group of a layer at a time (grouped-query attention maps query head i to kv
head i // group, so each group keeps the same count), at least one per group stays.
Channels are kept in multiples of 32 per layer (4-bit groups stay whole), at least 32.
The result has per-layer shapes in its ArchConfig; the KV cache is unchanged.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from tokenmill.model.arch import ArchConfig
from tokenmill.model.models.llama import LlamaForCausalLM
from tokenmill.optimize.forward import forward_hidden

CHANNEL_MULTIPLE = 32


@torch.no_grad()
def importance(
    model: LlamaForCausalLM, windows: list[torch.Tensor], what: str
) -> list[torch.Tensor]:
    """Per layer, the score of each query head ("heads", (num_heads,)) or MLP channel
    ("channels", (intermediate,)), as the module docstring defines them."""
    scores: list[torch.Tensor | None] = [None] * len(model.layers)
    handles = []
    for i, layer in enumerate(model.layers):
        attn = layer.self_attn
        if what == "heads":
            w_o = attn.o_proj.weight  # (hidden, nh * hd)

            def hook(_m, args, i=i, w_o=w_o, nh=attn.num_heads, hd=attn.head_dim):
                x = args[0].reshape(-1, nh, hd).float()  # (T, nh, hd)
                per_head = torch.einsum("thd,ohd->tho", x, w_o.view(-1, nh, hd))
                s = per_head.pow(2).sum(-1).sum(0)  # (nh,)
                scores[i] = s if scores[i] is None else scores[i] + s

            handles.append(attn.o_proj.register_forward_pre_hook(hook))
        else:
            down = layer.mlp.down_proj
            col_norm = down.weight.pow(2).sum(0)  # (ffn,)

            def hook(_m, args, i=i, col_norm=col_norm):
                z = args[0].reshape(-1, args[0].shape[-1]).float()
                s = z.pow(2).sum(0) * col_norm
                scores[i] = s if scores[i] is None else scores[i] + s

            handles.append(down.register_forward_pre_hook(hook))
    try:
        for w in windows:
            forward_hidden(model, [w])
    finally:
        for h in handles:
            h.remove()
    return [s for s in scores if s is not None]


def plan_heads(scores: list[torch.Tensor], num_kv_heads: int, amount: float) -> list[list[int]]:
    """The query heads each layer keeps (sorted indices), removing about `amount` of all
    heads in whole slices (one head per kv group)."""
    units = []  # (cost, layer, heads removed with this slice)
    for layer, s in enumerate(scores):
        s = s / s.mean().clamp_min(1e-12)
        group = s.numel() // num_kv_heads
        order = [
            torch.argsort(s[k * group : (k + 1) * group]) + k * group for k in range(num_kv_heads)
        ]
        for r in range(group - 1):
            heads = [int(o[r]) for o in order]
            units.append((float(s[heads].sum()), layer, r, heads))
    target = round(amount * sum(s.numel() for s in scores))
    removed: list[set[int]] = [set() for _ in scores]
    done = [0] * len(scores)
    count = 0
    for _cost, layer, rank, heads in sorted(units):
        if count + len(heads) > target:
            break
        if rank != done[layer]:
            continue  # a cheaper slice deeper in this layer cannot go before the first
        removed[layer].update(heads)
        done[layer] += 1
        count += len(heads)
    return [sorted(set(range(s.numel())) - removed[i]) for i, s in enumerate(scores)]


def plan_channels(scores: list[torch.Tensor], amount: float) -> list[list[int]]:
    """The MLP channels each layer keeps (sorted indices), about 1 - amount of them."""
    normed = [s / s.mean().clamp_min(1e-12) for s in scores]
    flat = torch.cat(normed)
    k = round(amount * flat.numel())
    threshold = torch.kthvalue(flat, k).values if k > 0 else flat.min() - 1
    keep = []
    for s in normed:
        n = int((s > threshold).sum())
        n = max(CHANNEL_MULTIPLE, math.floor(n / CHANNEL_MULTIPLE) * CHANNEL_MULTIPLE)
        keep.append(sorted(torch.topk(s, n).indices.tolist()))
    return keep


@torch.no_grad()
def apply_plan(
    model: LlamaForCausalLM, heads: list[list[int]] | None, channels: list[list[int]] | None
) -> LlamaForCausalLM:
    """A new model holding only the kept heads / channels (None: keep all), with an
    ArchConfig that records the per-layer shapes. The input model is not modified."""
    arch = model.arch
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for i, layer in enumerate(model.layers):
        p = f"layers.{i}."
        if heads is not None:
            hd, q = arch.head_dim, layer.self_attn.q_size
            rows = torch.tensor([h * hd + d for h in heads[i] for d in range(hd)])
            rows = torch.cat([rows, torch.arange(q, q + 2 * arch.kv_size)])
            for leaf in ("weight", "bias"):
                key = f"{p}self_attn.qkv_proj.{leaf}"
                if key in state:
                    state[key] = state[key][rows]
            state[f"{p}self_attn.o_proj.weight"] = state[f"{p}self_attn.o_proj.weight"][
                :, rows[: len(heads[i]) * hd]
            ]
        if channels is not None:
            ffn = layer.mlp.intermediate_size
            keep = torch.tensor(channels[i])
            key = f"{p}mlp.gate_up_proj.weight"
            state[key] = state[key][torch.cat([keep, keep + ffn])]
            key = f"{p}mlp.down_proj.weight"
            state[key] = state[key][:, keep]
    new_arch = dataclasses.replace(
        arch,
        layer_num_heads=tuple(len(h) for h in heads) if heads else arch.layer_num_heads,
        layer_intermediate_sizes=(
            tuple(len(c) for c in channels) if channels else arch.layer_intermediate_sizes
        ),
    )
    return rebuild(model, new_arch, state)


def rebuild(model: LlamaForCausalLM, arch: ArchConfig, state: dict) -> LlamaForCausalLM:
    """A model of `arch` holding `state` (our fused names), RoPE cache as in `model`."""
    with torch.device("meta"):
        new = type(model)(arch, max_positions=model.rotary.max_positions)
    new.load_state_dict(state, strict=True, assign=True)
    return new.requires_grad_(False).eval()
