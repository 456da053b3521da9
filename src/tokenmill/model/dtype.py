"""The compute dtype, and what "auto" means."""

from __future__ import annotations

import torch

from tokenmill.errors import ConfigError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def resolve_dtype(name: str) -> torch.dtype:
    """ "float32" / "bfloat16" -> that dtype. "auto" -> float32: the default must give
    transformers float32's greedy output (issue 15), and bfloat16 need not: on a CPU
    with AVX512-BF16 the default model's bfloat16 path left the float32 tokens within 12
    greedy steps. So bfloat16 is opt-in, on every CPU. GGUF block weights are computed
    on their blocks in float32 either way."""
    if name == "auto":
        return torch.float32
    if name not in _DTYPES:
        raise ConfigError(
            f"dtype must be 'auto', 'float32' or 'bfloat16', got {name!r}.", setting="dtype"
        )
    return _DTYPES[name]
