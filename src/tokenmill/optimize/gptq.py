"""int4 weight-only quantization with GPTQ error compensation (Frantar et al., 2023).

Round-to-nearest (RTN) quantizes each weight on its own. GPTQ quantizes the columns of
a weight one at a time and spreads each column's rounding error over the columns not
yet quantized, in proportion to the inverse Hessian of the layer's output error,
H = X^T X over calibration inputs X. The output error on inputs like the calibration
set is what it minimises, not the weight error.

Groups are asymmetric with a float16 scale and minimum per `group_size` columns (the
storage of tokenmill.model.quant.int4); a group's parameters are chosen when GPTQ
reaches its first column, from the weights as already updated by the errors before.
Every layer's Hessian comes from the float model's activations (not the partially
quantized model's), which keeps calibration to one pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokenmill.model.quant import int4

BLOCK = 128  # columns updated lazily together, as in the reference implementation


@dataclass
class QuantizedWeight:
    """One linear's int4 form: q (N, K) uint8 in [0, 15] and (N, K / G) group params."""

    q: torch.Tensor
    scales: torch.Tensor
    mins: torch.Tensor

    def dequantize(self, group_size: int) -> torch.Tensor:
        return int4.dequantize_q(self.q, self.scales.half(), self.mins.half(), group_size)

    def packed(self) -> dict[str, torch.Tensor]:
        """The checkpoint leaves: qweight, scales, mins (see tokenmill.model.quant.int4)."""
        return {
            "qweight": int4.pack(self.q),
            "scales": self.scales.half(),
            "mins": self.mins.half(),
        }


def rtn(weight: torch.Tensor, group_size: int) -> QuantizedWeight:
    """Round-to-nearest: every group spans its own [min, max]."""
    scales, mins = int4.quantize_groups(weight, group_size)
    return QuantizedWeight(int4.quantize_with(weight, scales, mins, group_size), scales, mins)


def output_error(weight: torch.Tensor, approx: torch.Tensor, hessian: torch.Tensor) -> float:
    """Mean squared output error per input row: trace((W - Q) H (W - Q)^T) / N."""
    d = (weight - approx).double()
    return float(torch.einsum("nk,kl,nl->", d, hessian.double(), d) / weight.shape[0])


@torch.no_grad()
def gptq(
    weight: torch.Tensor, hessian: torch.Tensor, group_size: int, damp: float = 0.01
) -> QuantizedWeight:
    """GPTQ of weight (N, K) float given hessian (K, K) = mean X^T X. damp: fraction of
    the mean diagonal added to it, which keeps the Cholesky factorisation stable."""
    w = weight.float().clone()
    n, k = w.shape
    h = hessian.double().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damp * torch.mean(torch.diag(h)) * torch.eye(k, dtype=h.dtype)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    hinv = hinv.float()
    q = torch.zeros((n, k), dtype=torch.uint8)
    scales = torch.zeros((n, k // group_size))
    mins = torch.zeros((n, k // group_size))
    for b0 in range(0, k, BLOCK):
        b1 = min(b0 + BLOCK, k)
        w1 = w[:, b0:b1].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[b0:b1, b0:b1]
        for i in range(b1 - b0):
            col = b0 + i
            g = col // group_size
            if col % group_size == 0:
                s, m = int4.quantize_groups(w1[:, i : i + group_size], group_size)
                scales[:, g], mins[:, g] = s[:, 0], m[:, 0]
            s16, m16 = scales[:, g].half().float(), mins[:, g].half().float()
            col_q = torch.round((w1[:, i] - m16) / s16).clamp_(0, 15)
            q[:, col] = col_q.to(torch.uint8)
            err = (w1[:, i] - (col_q * s16 + m16)) / hinv1[i, i]
            w1[:, i:] -= err[:, None] * hinv1[i, i:][None, :]
            err1[:, i] = err
        w[:, b1:] -= err1 @ hinv[b0:b1, b1:]
    return QuantizedWeight(q, scales, mins)
