"""Calibration: token windows of a text set, and activation statistics gathered from
the float model's projections while it reads them."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from tokenmill.model.tokenizer import Tokenizer
from tokenmill.optimize.forward import forward_hidden


def token_windows(
    tokenizer: Tokenizer, texts: Iterable[str], num_tokens: int, seq_len: int
) -> list[torch.Tensor]:
    """Consecutive windows of `seq_len` tokens of the texts, `num_tokens` in all (the
    last window may be shorter). ValueError when the texts are shorter than asked."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer.encode(text, add_special_tokens=False))
        if len(ids) >= num_tokens:
            break
    if len(ids) < num_tokens:
        raise ValueError(f"the calibration text has {len(ids)} tokens; {num_tokens} asked")
    ids = ids[:num_tokens]
    return [torch.tensor(ids[i : i + seq_len]) for i in range(0, num_tokens, seq_len)]


def projections(model: nn.Module) -> dict[str, nn.Linear]:
    """Every linear of the decoder layers, by its module name ("layers.3.mlp.down_proj")."""
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and name.startswith("layers.")
    }


@torch.no_grad()
def observe_inputs(
    model: nn.Module,
    windows: list[torch.Tensor],
    observe: Callable[[str, torch.Tensor], None],
) -> None:
    """Runs every window through the model (one window per call) and hands each layer
    projection's input, as (tokens, in_features) float32, to observe(name, x)."""
    handles = []
    for name, linear in projections(model).items():

        def hook(_module, args, _name=name):
            x = args[0]
            observe(_name, x.reshape(-1, x.shape[-1]).float())

        handles.append(linear.register_forward_pre_hook(hook))
    try:
        for window in windows:
            forward_hidden(model, [window])
    finally:
        for h in handles:
            h.remove()


def channel_absmax(model: nn.Module, windows: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per input channel, the largest |activation| each projection saw: (in_features,)."""
    stats: dict[str, torch.Tensor] = {}

    def observe(name: str, x: torch.Tensor) -> None:
        m = x.abs().amax(dim=0)
        stats[name] = m if name not in stats else torch.maximum(stats[name], m)

    observe_inputs(model, windows, observe)
    return stats


def hessians(model: nn.Module, windows: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per projection, the mean input outer product X^T X / n: (in, in) float32, the
    Hessian of its squared output error (up to a factor 2)."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def observe(name: str, x: torch.Tensor) -> None:
        xtx = x.T @ x
        sums[name] = xtx if name not in sums else sums[name] + xtx
        counts[name] = counts.get(name, 0) + x.shape[0]

    observe_inputs(model, windows, observe)
    return {name: s / counts[name] for name, s in sums.items()}
