"""The compute dtype: what "auto" means on this machine."""

from __future__ import annotations

from pathlib import Path

import torch

from tokenmill.errors import ConfigError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def resolve_dtype(name: str) -> torch.dtype:
    """ "float32" / "bfloat16" -> that dtype. "auto" -> bfloat16 where the CPU computes it
    natively (AVX512 with the avx512_bf16 extension), else float32, which is faster than
    emulated bfloat16."""
    if name == "auto":
        native = "AVX512" in torch.backends.cpu.get_cpu_capability()
        return torch.bfloat16 if native and "avx512_bf16" in _cpu_flags() else torch.float32
    if name not in _DTYPES:
        raise ConfigError(
            f"dtype must be 'auto', 'float32' or 'bfloat16', got {name!r}.", setting="dtype"
        )
    return _DTYPES[name]
