"""Root-mean-square layer norms: Llama's (optionally fused with the residual add) and Gemma's."""

from __future__ import annotations

import torch
from torch import nn

from tokenmill.model.kernels import inference_kernels


class RMSNorm(nn.Module):
    """`weight * x / rms(x)`, computed in float32 and cast back, as Llama's reference does.

    Called with a residual, it first adds the residual to x and returns both the normed
    sum and the sum (the next residual), saving one pass over the activations. On float32
    rows with the native kernels built, that is one kernel call, which writes the sum into
    the residual tensor in place.
    """

    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size), requires_grad=False)

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x, residual: (T, hidden). Returns normed (T, hidden), plus x + residual when a
        residual is given. Does not modify x; may update residual in place to the sum
        (callers use the returned one)."""
        kernels = inference_kernels(x, self.weight)
        if kernels is not None and x.dtype == torch.float32 and x.dim() == 2:
            out = kernels.rms_norm(x, self.weight, self.eps, residual)
            return out if residual is None else (out, residual)
        if residual is not None:
            x = x + residual
            residual = x
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        out = self.weight * h.to(dtype)
        return out if residual is None else (out, residual)


class GemmaRMSNorm(nn.Module):
    """Gemma's variant: `x / rms(x) * (1 + weight)`, the product taken in float32 before
    the cast back (Llama casts first), so a zero weight is the identity scale."""

    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(hidden_size), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., hidden). Returns the normed (..., hidden) in x's dtype; x is unchanged."""
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (h * (1.0 + self.weight.float())).to(x.dtype)
