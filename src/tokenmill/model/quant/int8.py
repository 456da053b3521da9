"""Int8 weights with per-row dynamic int8 activations (W8A8), on VNNI integer GEMMs.

On CPUs without native bfloat16 this is the fast path: the int8 x int8 -> int32
product (`torch._int_mm`, oneDNN with VNNI underneath) runs 3-6x faster than the
float32 GEMM at the shapes of a small model, and reads a quarter of the bytes.

Weights are quantized symmetrically per output channel. Activations are quantized
symmetrically per row at run time, so a row's result never depends on what else is in
the batch (per-tensor activation scales, as fbgemm's dynamic linear uses, would make
one request's output depend on its neighbours).
"""

from __future__ import annotations

import torch
from torch import nn

from tokenmill.model.kernels import cpu_kernels

QUANTIZATIONS = (None, "int8", "auto")
INT8_METHOD = "tokenmill-w8a8"
"""`quant_method` in a checkpoint's `quantization_config` whose linears are stored as
`X.qweight` int8 (N, K) and `X.scale` float32 (N,): loaded straight into Int8Linear."""


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w: (N, K) float. Returns (int8 (N, K), float32 scale (N,)) with
    w ~= q * scale[:, None]."""
    w = w.float()
    scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


def int8_matmul(x: torch.Tensor, qweight_t: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x: (M, K) float32; qweight_t: (K, N) int8 (a transposed view is fine); scale (N,).
    Returns (M, N) float32 = x @ dequant(W)^T with x quantized per row."""
    x_scale = x.abs().amax(dim=-1, keepdim=True).clamp_min_(1e-12).div_(127.0)  # (M, 1)
    xq = torch.round(x / x_scale).to(torch.int8)  # |x / x_scale| <= 127 by construction
    acc = torch._int_mm(xq, qweight_t)  # (M, N) int32
    return acc.float().mul_(x_scale).mul_(scale)


class Int8Linear(nn.Module):
    """Drop-in for nn.Linear (float32 activations in and out).

    Built from a float weight, or under `torch.device("meta")` as a shell whose
    `qweight` / `scale` / `bias` buffers a pre-quantized checkpoint then assigns."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        q, scale = quantize_rows(weight)
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.register_buffer("qweight", q)  # (N, K) int8
        self.register_buffer("scale", scale)  # (N,) float32
        self.register_buffer("bias", None if bias is None else bias.detach().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., K). Returns (..., N) float32. One native call when the kernels are
        built, else the same arithmetic in ATen ops."""
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).float()
        kernels = cpu_kernels()
        if kernels is not None:
            y = kernels.int8_linear(x2, self.qweight, self.scale, self.bias)
        else:
            y = int8_matmul(x2, self.qweight.t(), self.scale)
            if self.bias is not None:
                y += self.bias
        return y.view(*shape[:-1], self.out_features)


def quantize_linears_int8(module: nn.Module) -> int:
    """Replace every nn.Linear inside `module` with an Int8Linear, in place. Returns how
    many were replaced. The float weights are released."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear(child.weight.data, child.bias))
            count += 1
        else:
            count += quantize_linears_int8(child)
    return count


def int8_shells(model: nn.Module) -> None:
    """Replace every nn.Linear of a meta-device decoder (and its output head, tied or
    not) with an empty Int8Linear of the same shape, ready for `load_state_dict(...,
    assign=True)` of a pre-quantized checkpoint."""
    with torch.device("meta"):
        quantize_model_int8(model)


def quantize_model_int8(model: nn.Module) -> None:
    """Quantize a decoder's projections and its output head in place. A tied output
    head gets its own int8 copy; the float embedding table stays for lookups."""
    quantize_linears_int8(model.layers)
    if model.lm_head is None:
        model.lm_head = Int8Linear(model.embed_tokens.weight.data, None)
    elif isinstance(model.lm_head, nn.Linear):
        model.lm_head = Int8Linear(model.lm_head.weight.data, model.lm_head.bias)
