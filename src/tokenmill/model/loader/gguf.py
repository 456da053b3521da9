"""Weights, architecture and tokenizer from a GGUF file (llama.cpp's format).

Quantized tensors either stay in their blocks (`BlockWeight`, for the native kernels,
which decode Q4_0, Q4_1, Q5_0, Q8_0, Q4_K and Q6_K) or are dequantized (any type
`gguf.quants` can dequantize) to float32 one at a time and cast to the serving dtype at
once, so at most one float32 tensor exists beside the model's weights.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf.quants import dequantize

from tokenmill.model.arch import ArchConfig
from tokenmill.model.loader.gguf_file import GGUFFile
from tokenmill.model.quant.blocks import BLOCK_TYPES, BlockWeight
from tokenmill.model.tokenizer import Tokenizer

# llama.cpp name -> HF name, for names outside the numbered blocks.
_GLOBAL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
# Per-block llama.cpp name -> HF name below model.layers.N.
_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
# Where an architecture gives a llama.cpp name another meaning: Gemma norms both before
# and after each sublayer, and its `ffn_norm` is the one before the MLP.
_ARCH_BLOCK_NAMES = {
    arch: {"ffn_norm": "pre_feedforward_layernorm"} for arch in ("gemma2", "gemma3")
}
_BLOCK = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
# llama.cpp's converter reorders q/k rows for its interleaved RoPE only for these.
_PERMUTED_ARCHS = ("llama",)
_ROPE_FREQS = "rope_freqs.weight"
# llama.cpp's converter stores Gemma's RMSNorm weights as 1 + w (its norm multiplies by the
# weight alone); HF's modules, and ours, hold w and add the 1 themselves.
_NORM_PLUS_ONE_ARCHS = ("gemma", "gemma2", "gemma3")


def hf_name(name: str, arch: str = "llama") -> str:
    """The HF checkpoint name of GGUF tensor `name` in architecture `arch`; KeyError for
    an unknown one."""
    match = _BLOCK.fullmatch(name)
    if match:
        layer, part, leaf = match.groups()
        part = _ARCH_BLOCK_NAMES.get(arch, {}).get(part) or _BLOCK_NAMES[part]
        return f"model.layers.{layer}.{part}.{leaf}"
    base, _, leaf = name.rpartition(".")
    return f"{_GLOBAL_NAMES[base]}.{leaf}"


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's q/k row order (pairs interleaved per head) to HF's rotate-half
    order (first half of each head, then second half). w: (n_head * hd, ...)."""
    hd = w.shape[0] // n_head
    return w.reshape(n_head, hd // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@dataclass
class GGUFCheckpoint:
    """An open GGUF file: its metadata, architecture and tokenizer; weights on demand."""

    path: Path
    metadata: dict[str, Any]
    arch: ArchConfig
    file: GGUFFile

    @classmethod
    def open(cls, path: str | Path) -> GGUFCheckpoint:
        """Reads the header and metadata; tensor data stays memory-mapped."""
        file = GGUFFile.open(path)
        names = {t.name for t in file.tensors}
        freq_factors: tuple[float, ...] = ()
        if _ROPE_FREQS in names:
            tensor = next(t for t in file.tensors if t.name == _ROPE_FREQS)
            freqs = dequantize(tensor.data, tensor.tensor_type).reshape(-1)
            freq_factors = tuple(float(x) for x in freqs)
        arch = ArchConfig.from_gguf(file.metadata, names, freq_factors)
        return cls(Path(path), file.metadata, arch, file)

    def sampling_defaults(self) -> dict | None:
        """GGUF files carry no generation config; packaged models have their own."""
        return None

    def tokenizer(self) -> Tokenizer:
        return Tokenizer.from_gguf(self.metadata)

    def block_types(self) -> dict[str, int]:
        """Tensor count per GGUF type name among the model's matrices (2-D tensors)."""
        counts: dict[str, int] = {}
        for tensor in self.file.tensors:
            if len(tensor.shape) == 2:
                name = tensor.tensor_type.name
                counts[name] = counts.get(name, 0) + 1
        return counts

    def has_kernel_blocks(self) -> bool:
        """Whether any matrix is in a block format the native kernels decode."""
        return any(len(t.shape) == 2 and t.tensor_type in BLOCK_TYPES for t in self.file.tensors)

    def weights(
        self, dtype: torch.dtype, keep_blocks: bool = False
    ) -> Iterator[tuple[str, torch.Tensor | BlockWeight]]:
        """(HF name, tensor in `dtype`) for every weight, q/k in HF's row order and norm
        weights as HF holds them. With keep_blocks, a matrix in a block format the
        kernels decode comes as a BlockWeight holding a copy of the file's bytes instead
        (rows reordered for q/k, which moves whole rows and so keeps every block intact)."""
        arch = self.arch.architecture
        permuted = arch in _PERMUTED_ARCHS
        plus_one = arch in _NORM_PLUS_ONE_ARCHS
        for tensor in self.file.tensors:
            if tensor.name == _ROPE_FREQS:
                continue
            if keep_blocks and len(tensor.shape) == 2 and tensor.tensor_type in BLOCK_TYPES:
                # The file's bytes, a view of the mmap: (N, row_bytes) uint8 (shape is
                # (K, N), innermost first).
                raw = tensor.data.reshape(int(tensor.shape[1]), -1)
                if permuted and ".attn_q." in tensor.name:
                    raw = unpermute(raw, self.arch.num_heads)
                elif permuted and ".attn_k." in tensor.name:
                    raw = unpermute(raw, self.arch.num_kv_heads)
                data = torch.from_numpy(np.array(raw, dtype=np.uint8, order="C", copy=True))
                yield (
                    hf_name(tensor.name, arch),
                    BlockWeight(data, int(tensor.tensor_type), int(tensor.shape[0])),
                )
                continue
            w = dequantize(tensor.data, tensor.tensor_type)
            # Logical shape, outermost first.
            w = w.reshape([int(d) for d in reversed(tensor.shape)])
            if permuted and ".attn_q." in tensor.name:
                w = unpermute(w, self.arch.num_heads)
            elif permuted and ".attn_k." in tensor.name:
                w = unpermute(w, self.arch.num_kv_heads)
            if plus_one and tensor.name.endswith("norm.weight"):
                w = w - np.float32(1.0)
            if not w.flags.writeable:
                w = w.copy()  # an unquantized tensor comes back as a view of the mmap
            yield hf_name(tensor.name, arch), torch.from_numpy(w).to(dtype)
