"""Unstructured and 2:4 sparsity by weight magnitude, on every decoder projection.

- magnitude: in each projection, the `amount` fraction of weights with the smallest
  |w| become zero;
- 2:4: in every run of 4 consecutive input weights of a row, the 2 smallest |w| become
  zero (the pattern sparse tensor cores accelerate; here it is stored dense).

The masks are returned so a recovery fine-tune can keep the zeros zero.
"""

from __future__ import annotations

import torch
from torch import nn

from tokenmill.optimize.calibration import projections


def two_four_mask(w: torch.Tensor) -> torch.Tensor:
    """(N, K) bool, True where w is kept: the 2 largest |w| of each 4 along K."""
    n, k = w.shape
    groups = w.abs().reshape(n, k // 4, 4)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, groups.topk(2, dim=-1).indices, True)
    return keep.reshape(n, k)


def magnitude_mask(w: torch.Tensor, amount: float) -> torch.Tensor:
    """(N, K) bool, True where w is kept: all but the `amount` smallest |w|."""
    k = round(amount * w.numel())
    if k == 0:
        return torch.ones_like(w, dtype=torch.bool)
    threshold = w.abs().flatten().kthvalue(k).values
    return w.abs() > threshold


@torch.no_grad()
def sparsify(model: nn.Module, method: str, amount: float) -> dict[str, torch.Tensor]:
    """Zeroes weights of every decoder projection in place ("2:4" or "magnitude").
    Returns {projection name: kept mask}."""
    masks = {}
    for name, lin in projections(model).items():
        w = lin.weight
        mask = two_four_mask(w) if method == "2:4" else magnitude_mask(w, amount)
        w.mul_(mask)
        masks[name] = mask
    return masks


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Re-zero the pruned weights (after an optimizer step). Mutates the weights."""
    with torch.no_grad():
        for name, lin in projections(model).items():
            if name in masks:
                lin.weight.mul_(masks[name])


def sparsity(model: nn.Module) -> float:
    """Fraction of exact zeros over all decoder projection weights."""
    zeros = total = 0
    for lin in projections(model).values():
        zeros += int((lin.weight == 0).sum())
        total += lin.weight.numel()
    return zeros / total
