"""Int4 weight-only storage: asymmetric groups with a scale and a minimum (Q4_1's form).

The checkpoint layout (a HF directory whose config.json has
`quantization_config = {"quant_method": "tokenmill-int4", "bits": 4, "group_size": G}`),
for each quantized linear `X` of shape (N, K), K a multiple of G:

- `X.qweight`: uint8 (N, K / 2). Byte j of row n holds column 2j in its low nibble and
  column 2j + 1 in its high nibble; each nibble is an unsigned q in [0, 15].
- `X.scales`: float16 (N, K / G), `X.mins`: float16 (N, K / G).
- The weight is `W[n, k] = q[n, k] * scales[n, k // G] + mins[n, k // G]`.

With G = 32 this is llama.cpp's Q4_1 block (d, m, 32 nibbles) up to the order of the
nibbles inside a block (Q4_1 pairs element i with i + 16), so a Q4_1 kernel can take
it after a per-block shuffle at load time. Until such a kernel is wired, the loader
dequantizes to the serving dtype (`dequantize`), which saves disk, not memory.
"""

from __future__ import annotations

import torch

INT4_METHOD = "tokenmill-int4"
GROUP_SIZES = (32, 128)


def quantize_groups(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Round-to-nearest parameters for w: (N, K) float. Returns (scales, mins), each
    (N, K / G) float32, spanning each group's [min, max] with 16 levels."""
    n, k = w.shape
    g = w.float().reshape(n, k // group_size, group_size)
    lo = g.amin(dim=-1).clamp(max=0.0)
    hi = g.amax(dim=-1).clamp(min=0.0)
    scales = ((hi - lo) / 15.0).clamp_min(1e-8)
    return scales, lo


def quantize_with(
    w: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, group_size: int
) -> torch.Tensor:
    """q (N, K) uint8 in [0, 15] for w: (N, K) under the given group parameters.
    The scales and mins are rounded to float16 first, as they are stored."""
    s = scales.half().float().repeat_interleave(group_size, dim=1)
    m = mins.half().float().repeat_interleave(group_size, dim=1)
    return torch.round((w.float() - m) / s).clamp_(0, 15).to(torch.uint8)


def dequantize_q(
    q: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, group_size: int
) -> torch.Tensor:
    """float32 (N, K) weight from unpacked q (N, K) and group parameters (N, K / G)."""
    s = scales.float().repeat_interleave(group_size, dim=1)
    m = mins.float().repeat_interleave(group_size, dim=1)
    return q.float() * s + m


def pack(q: torch.Tensor) -> torch.Tensor:
    """(N, K) uint8 nibbles -> (N, K / 2) uint8, even column in the low nibble."""
    return (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous()


def unpack(packed: torch.Tensor) -> torch.Tensor:
    """(N, K / 2) uint8 -> (N, K) uint8 nibbles; inverse of `pack`."""
    low, high = packed & 0x0F, packed >> 4
    return torch.stack((low, high), dim=-1).reshape(packed.shape[0], -1)


def dequantize(
    qweight: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor, group_size: int
) -> torch.Tensor:
    """The float32 (N, K) weight a stored (qweight, scales, mins) triple stands for."""
    return dequantize_q(unpack(qweight), scales, mins, group_size)
