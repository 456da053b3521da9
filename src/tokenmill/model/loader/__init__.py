"""Loading a servable model: resolve the name, read weights, build the module.

The module is built on the meta device and its parameters are the loaded tensors
themselves (no copy), so peak memory is the weights in the serving dtype plus one
tensor in float32.

What `dtype="auto"` computes on (`LoadedModel.kernel_path`):
- a GGUF whose matrices are in block formats the native kernels decode (Q4_0, Q4_1,
  Q5_0, Q8_0, Q4_K, Q6_K): those blocks themselves, with float32 activations and
  accumulation ("gguf-blocks:<isa>"). Exact up to summation order, and the fewest bytes
  read per token, so it is both the fastest path and one that matches transformers
  float32 on the parity tests;
- otherwise (no compiler, a float checkpoint) dequantized weights in bfloat16 where the
  CPU computes it natively, else float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tokenmill.errors import ConfigError
from tokenmill.model.arch import ArchConfig
from tokenmill.model.dtype import resolve_dtype
from tokenmill.model.kernels import cpu_kernels, select_isa
from tokenmill.model.loader.gguf import GGUFCheckpoint
from tokenmill.model.loader.safetensors import SafetensorsCheckpoint
from tokenmill.model.models.registry import CausalLM, model_class
from tokenmill.model.quant.blocks import install_block_weights, pack_block_weights
from tokenmill.model.quant.int8 import (
    INT8_METHOD,
    QUANTIZATIONS,
    int8_shells,
    quantize_model_int8,
)
from tokenmill.model.registry import resolve_model
from tokenmill.model.tokenizer import Tokenizer

__all__ = ["LoadedModel", "load_model", "resolve_dtype"]


@dataclass
class LoadedModel:
    """A model ready to serve and what it was loaded from."""

    model: CausalLM
    """In eval mode, no gradients, weights in `dtype`."""
    tokenizer: Tokenizer
    arch: ArchConfig
    name: str
    """The served name (e.g. "smollm2-135m-instruct")."""
    path: Path
    dtype: torch.dtype
    """The activations' dtype (float32 on the block path)."""
    max_model_len: int
    """Longest sequence (prompt + output) served; the RoPE cache covers it."""
    kernel_path: str = "float32"
    """What the linear layers compute on: "gguf-blocks:<isa>" (the GGUF's own blocks,
    native kernels for instruction set <isa>: amx, avx512, avx2 or scalar), "float32" or
    "bfloat16" (dequantized weights, ATen), or "int8" (W8A8, lossy)."""
    weight_types: dict[str, int] | None = None
    """For a GGUF: how many matrices the file holds in each type (e.g. {"Q4_1": 210,
    "Q8_0": 1}); None for other checkpoints."""
    sampling_defaults: dict | None = None
    """Sampling defaults from the model's generation_config.json or its package's card."""
    quantization: str | None = None
    """"int8" when the projections run as Int8Linear (asked for, or stored so)."""
    batch_invariant: bool = False
    """Loaded with batch_invariant: the block kernels keep one arithmetic for every
    batch size (a draft model loaded beside it must ask the same)."""


def load_model(
    model: str | None = None,
    dtype: str = "auto",
    max_model_len: int | None = None,
    quantization: str | None = None,
    batch_invariant: bool = False,
) -> LoadedModel:
    """Loads `model` (None: the default packaged model; a packaged short name; a .gguf
    path; a HF directory). Raises ModelNotFoundError for an unknown name,
    ConfigError for an unsupported architecture or a max_model_len beyond the
    model's. quantization="int8" stores every projection and the output head as int8
    (see tokenmill.model.quant.int8); it needs float32 activations. A directory written
    pre-quantized by `tokenmill optimize quantize` loads as it was stored: int8 into
    Int8Linear (float32 activations), int4 dequantized to `dtype`. quantization="auto"
    keeps a GGUF's own blocks where the native kernels compute on them (dtype auto), else
    is int8; LoadedModel.quantization says which was chosen. batch_invariant keeps the
    block kernels on one arithmetic for every batch size (see kernels.select_isa)."""
    if quantization not in QUANTIZATIONS:
        raise ConfigError(
            f"quantization must be one of {sorted(q for q in QUANTIZATIONS if q)} or unset, "
            f"got {quantization!r}.",
            setting="quantization",
        )
    source = resolve_model(model)
    weight_types = None
    if source.format == "gguf":
        checkpoint: GGUFCheckpoint | SafetensorsCheckpoint = GGUFCheckpoint.open(source.path)
        weight_types = checkpoint.block_types()
    else:
        checkpoint = SafetensorsCheckpoint.open(source.path)
    stored = getattr(checkpoint, "quantization", None) or {}
    prequantized = stored.get("quant_method") == INT8_METHOD
    block_capable = (
        dtype == "auto"
        and isinstance(checkpoint, GGUFCheckpoint)
        and checkpoint.has_kernel_blocks()
        and cpu_kernels() is not None
    )
    if prequantized:
        quantization = "int8"
    if quantization == "auto":
        # The GGUF's own 4-8 bit blocks are smaller than int8 and lose nothing more.
        quantization = None if block_capable else "int8"
    if quantization == "int8":
        dtype = "float32"
    torch_dtype = resolve_dtype(dtype)
    blocks = block_capable and quantization is None
    if blocks:
        torch_dtype = torch.float32
    arch = checkpoint.arch
    cls = model_class(arch.architecture)
    if max_model_len is None:
        max_model_len = arch.max_position_embeddings
    elif max_model_len > arch.max_position_embeddings:
        raise ConfigError(
            f"max_model_len {max_model_len} exceeds the model's context length "
            f"{arch.max_position_embeddings}; lower it or leave it unset.",
            setting="max_model_len",
        )
    with torch.device("meta"):
        module = cls(arch, max_positions=max_model_len)
    if prequantized:
        int8_shells(module)
    if blocks:
        weights = checkpoint.weights(torch_dtype, keep_blocks=True)
    else:
        weights = checkpoint.weights(torch_dtype)
    state = dict(cls.fuse_weights(arch, weights))
    if blocks:
        install_block_weights(module, state, arch.tie_word_embeddings)
        pack_block_weights(module)
        kernel_path = f"gguf-blocks:{select_isa(batch_invariant)}"
    else:
        kernel_path = "bfloat16" if torch_dtype == torch.bfloat16 else "float32"
    module.load_state_dict(state, strict=True, assign=True)
    module.requires_grad_(False).eval()
    if quantization == "int8" and not prequantized:
        quantize_model_int8(module)
    if quantization == "int8":
        kernel_path = "int8"
    return LoadedModel(
        model=module,
        tokenizer=checkpoint.tokenizer(),
        arch=arch,
        name=source.name,
        path=source.path,
        dtype=torch_dtype,
        max_model_len=max_model_len,
        kernel_path=kernel_path,
        weight_types=weight_types,
        sampling_defaults=checkpoint.sampling_defaults() or source.sampling,
        quantization=quantization,
        batch_invariant=batch_invariant,
    )
