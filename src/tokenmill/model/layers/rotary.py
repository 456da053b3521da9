"""Rotary position embedding (the rotate-half convention of HF Llama)."""

from __future__ import annotations

import math

import torch
from torch import nn

from tokenmill.model.arch import RopeScaling


def inverse_frequencies(
    head_dim: int, theta: float, scaling: RopeScaling | None, device: torch.device
) -> torch.Tensor:
    """(head_dim // 2,) float32 on `device`: the angle per position of each rotary pair."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    inv_freq = 1.0 / (theta**exponents)
    if scaling is None:
        return inv_freq
    if scaling.kind == "linear":
        return inv_freq / scaling.factor
    if scaling.kind == "freq_factors":
        return inv_freq / torch.tensor(scaling.freq_factors, dtype=torch.float32, device=device)
    # llama3: keep short wavelengths, divide long ones by `factor`, blend in between.
    old_len = scaling.original_max_position_embeddings
    low_wavelen = old_len / scaling.low_freq_factor
    high_wavelen = old_len / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (old_len / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    blended = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    is_medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(is_medium, blended, scaled)


class RotaryEmbedding(nn.Module):
    """Holds cos/sin for every position up to `max_positions`, in float32.

    `cos_sin(positions, dtype)` is meant to run once per step; `apply` once per layer.
    The cache is built on the CPU even when the module is created under
    `torch.device("meta")`, so a loader can build the model without allocating weights.
    """

    def __init__(
        self, head_dim: int, max_positions: int, theta: float, scaling: RopeScaling | None
    ) -> None:
        super().__init__()
        cpu = torch.device("cpu")
        inv_freq = inverse_frequencies(head_dim, theta, scaling, cpu)
        t = torch.arange(max_positions, dtype=torch.int64, device=cpu).float()
        freqs = torch.outer(t, inv_freq)  # (max_positions, head_dim // 2)
        self.register_buffer("cos_cache", freqs.cos(), persistent=False)
        self.register_buffer("sin_cache", freqs.sin(), persistent=False)

    @property
    def max_positions(self) -> int:
        return int(self.cos_cache.shape[0])

    def cos_sin(
        self, positions: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """positions: (T,) int64. Returns cos, sin: (T, 1, head_dim // 2) in `dtype`,
        ready to broadcast over heads."""
        cos = self.cos_cache.index_select(0, positions).to(dtype).unsqueeze(1)
        sin = self.sin_cache.index_select(0, positions).to(dtype).unsqueeze(1)
        return cos, sin

    @staticmethod
    def apply(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x: (T, heads, head_dim). Returns x rotated (a new tensor): the first and second
        halves of head_dim form the rotary pairs."""
        x1, x2 = x.chunk(2, dim=-1)  # (T, heads, head_dim // 2) each
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
