"""Weights kept in their GGUF block formats, computed on by the native kernels.

A GGUF stores most matrices as rows of quantized blocks (Q4_1: per 32 weights a float16
scale and min and 16 bytes of 4-bit values). `BlockWeight` keeps those bytes as they
are in the file (or, for Q4_1, in a form with the same values that decodes faster);
`BlockLinear` and `BlockEmbedding` compute on them with C++ kernels that decode the
blocks in registers and accumulate in float32, so their results equal
the dequantized float32 model's up to the order of the additions, while reading 3-6x
fewer bytes per token than float32 or bfloat16 weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize
from torch import nn

from tokenmill.model.kernels import cpu_kernels
from tokenmill.model.quant.arena import hugepage_buffer

Q4_1F = 259
"""tokenmill's own form of a Q4_1 block, never in a file (quant.h's kQ4_1F): the float16
scale and min widened to float32, exactly, then the same 16 bytes of nibbles; 24 bytes
a block instead of 20. The AVX-512 gemv reads the pair as two broadcasts instead of
converting it, and at batch 1 the conversion, not memory, bounded the block
(`repack_q4_1`, done by `pack_block_weights`)."""

# type id -> (elements per block, bytes per block), for the types the kernels decode:
# ggml's ids as in the GGUF file, and Q4_1F.
BLOCK_TYPES: dict[int, tuple[int, int]] = {
    GGMLQuantizationType.Q4_0: (32, 18),
    GGMLQuantizationType.Q4_1: (32, 20),
    GGMLQuantizationType.Q5_0: (32, 22),
    GGMLQuantizationType.Q8_0: (32, 34),
    GGMLQuantizationType.Q4_K: (256, 144),
    GGMLQuantizationType.Q6_K: (256, 210),
    Q4_1F: (32, 24),
}


def type_name(qtype: int) -> str:
    """A block type's name: ggml's ("Q4_1"), or "Q4_1F"."""
    return "Q4_1F" if qtype == Q4_1F else GGMLQuantizationType(qtype).name


@dataclass(frozen=True)
class BlockWeight:
    """An (N, K) matrix as N rows of GGUF blocks. Immutable; `data` is never written."""

    data: torch.Tensor
    """(N, row_bytes) uint8, contiguous: row n holds K / block_elems blocks."""
    qtype: int
    """The ggml type id (GGMLQuantizationType value), or Q4_1F."""
    in_features: int
    """K, the logical row length."""

    def __post_init__(self) -> None:
        if self.qtype not in BLOCK_TYPES:
            raise ValueError(f"no kernel for GGUF type {self.type_name}")
        elems, nbytes = BLOCK_TYPES[self.qtype]
        if self.in_features % elems or self.data.shape[1] != self.in_features // elems * nbytes:
            raise ValueError(
                f"{self.type_name} rows of {self.data.shape[1]} bytes cannot hold "
                f"{self.in_features} weights"
            )

    @property
    def out_features(self) -> int:
        return int(self.data.shape[0])

    @property
    def type_name(self) -> str:
        return type_name(self.qtype)

    def dequantize(self) -> torch.Tensor:
        """(N, K) float32 by gguf-py's reference decoder (slow; for tests and fallbacks)."""
        data = self.data.numpy()
        if self.qtype == Q4_1F:  # gguf-py decodes the file's form, which holds the same values
            data, qtype = _q4_1_bytes(data), GGMLQuantizationType.Q4_1
        else:
            qtype = GGMLQuantizationType(self.qtype)
        w = dequantize(data, qtype)
        return torch.from_numpy(np.ascontiguousarray(w)).reshape(self.out_features, -1)


def _q4_1_bytes(data: np.ndarray) -> np.ndarray:
    """Q4_1F rows (N, nb * 24) back to GGUF Q4_1 rows (N, nb * 20). Exact: each float32
    scale and min came from a float16."""
    blocks = data.reshape(data.shape[0], -1, 24)
    out = np.empty((*blocks.shape[:2], 20), dtype=np.uint8)
    halves = np.ascontiguousarray(blocks[..., :8]).view(np.float32).astype(np.float16)
    out[..., :4] = halves.view(np.uint8)
    out[..., 4:] = blocks[..., 8:]
    return out.reshape(data.shape[0], -1)


def repack_q4_1(w: BlockWeight, out: torch.Tensor | None = None) -> BlockWeight:
    """A Q4_1 matrix in Q4_1F form, written into `out` ((N, row_bytes * 6 // 5) uint8)
    or a new tensor. The weights' values are unchanged, so is every kernel result: each
    kernel dequantizes fmadd(q, scale, min) from the same float32 scale and min, which
    the Q4_1 path gets by converting the float16s. Mutates only `out`."""
    if w.qtype != GGMLQuantizationType.Q4_1:
        raise ValueError(f"repack_q4_1 takes Q4_1, not {w.type_name}")
    shape = (w.out_features, _packed_row_bytes(w))
    if out is None:
        out = torch.empty(shape, dtype=torch.uint8)
    elif tuple(out.shape) != shape or out.dtype != torch.uint8 or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous {shape} uint8 tensor")
    src = w.data.numpy().reshape(w.out_features, -1, 20)
    dst = out.numpy().reshape(w.out_features, -1, 24)
    scales = np.ascontiguousarray(src[..., :4]).view(np.float16).astype(np.float32)
    dst[..., :8] = scales.view(np.uint8)
    dst[..., 8:] = src[..., 4:]
    return BlockWeight(out, Q4_1F, w.in_features)


def concat_rows(parts: Sequence[torch.Tensor | BlockWeight]) -> torch.Tensor | BlockWeight | tuple:
    """Stack matrices along their output rows, as a fused q/k/v or gate/up weight.

    Float tensors give a tensor; block weights of one type give one BlockWeight; block
    weights of mixed types (a Q4_K_M file's q in Q5_0 beside v in Q8_0) give the tuple of
    parts, which BlockLinear computes segment by segment. Block weights beside a float
    one (a shard in a type no kernel decodes) are dequantized, which is exact."""
    if not any(isinstance(p, BlockWeight) for p in parts):
        return torch.cat(list(parts), dim=0)
    if not all(isinstance(p, BlockWeight) for p in parts):
        dtype = next(p.dtype for p in parts if isinstance(p, torch.Tensor))
        return torch.cat(
            [p.dequantize().to(dtype) if isinstance(p, BlockWeight) else p for p in parts]
        )
    if len({p.qtype for p in parts}) == 1:
        data = torch.cat([p.data for p in parts], dim=0)
        return BlockWeight(data, parts[0].qtype, parts[0].in_features)
    return tuple(parts)


class BlockLinear(nn.Module):
    """y = x W^T (+ bias) with W in GGUF blocks, one or several row segments.

    Takes float32 activations (others are converted) and returns float32. Holds no
    gradients; the block bytes are shared, never copied, so a tied output head and the
    embedding read the same memory.
    """

    def __init__(self, weight: BlockWeight | Sequence[BlockWeight], bias: bool = False) -> None:
        super().__init__()
        parts = (weight,) if isinstance(weight, BlockWeight) else tuple(weight)
        self.in_features = parts[0].in_features
        if any(p.in_features != self.in_features for p in parts):
            raise ValueError("row segments disagree on in_features")
        self.parts = parts
        self.out_features = sum(p.out_features for p in parts)
        bounds, start = [], 0
        for p in parts:
            bounds.append((start, start + p.out_features))
            start += p.out_features
        self._bounds = tuple(bounds)
        # A placeholder that load_state_dict(assign=True) replaces with the checkpoint's.
        self.bias = (
            nn.Parameter(torch.empty(self.out_features, device="meta"), requires_grad=False)
            if bias
            else None
        )
        self._kernels = cpu_kernels()
        if self._kernels is None:
            raise RuntimeError("BlockLinear needs the native kernels; load the float weights")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., K). Returns (..., N) float32. Mutates nothing."""
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)
        if x2.dtype != torch.float32:
            x2 = x2.float()
        if x2.stride(-1) != 1:
            x2 = x2.contiguous()
        k = self._kernels
        if len(self.parts) == 1:
            y = k.quant_matmul(x2, self.parts[0].data, self.parts[0].qtype)
        else:
            y = x2.new_empty((x2.shape[0], self.out_features))
            for p, (a, b) in zip(self.parts, self._bounds, strict=True):
                k.quant_matmul_out(y[:, a:b], x2, p.data, p.qtype)
        if self.bias is not None:
            y += self.bias
        return y.view(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        types = "+".join(p.type_name for p in self.parts)
        return f"in={self.in_features}, out={self.out_features}, {types}"


class BlockEmbedding(nn.Module):
    """Embedding lookup that decodes only the looked-up rows of a block weight."""

    def __init__(self, weight: BlockWeight) -> None:
        super().__init__()
        self.weight_blocks = weight
        self.num_embeddings, self.embedding_dim = weight.out_features, weight.in_features
        self._kernels = cpu_kernels()
        if self._kernels is None:
            raise RuntimeError("BlockEmbedding needs the native kernels; load the float weights")

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (T,) int64 in [0, num_embeddings). Returns (T, dim) float32."""
        w = self.weight_blocks
        return self._kernels.quant_rows(w.data, w.qtype, w.in_features, ids.reshape(-1)).view(
            *ids.shape, self.embedding_dim
        )

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, {self.weight_blocks.type_name}"


def install_block_weights(model: nn.Module, state: dict, tie_word_embeddings: bool) -> list[str]:
    """Replace the nn.Linear / nn.Embedding owning each BlockWeight entry of `state` (a
    fused state dict, as `fuse_weights` yields it) with its block module, and remove
    those entries from `state`. A tied output head becomes a BlockLinear over the
    embedding's blocks. Returns the names installed. Mutates `model` and `state`."""
    installed = []
    for name in [n for n, v in state.items() if isinstance(v, BlockWeight | tuple)]:
        weight = state.pop(name)
        owner_name, _, leaf = name.rpartition(".")
        if leaf != "weight":
            raise ValueError(f"block data for {name!r}, which is not a weight")
        parent_name, _, attr = owner_name.rpartition(".")
        parent = model.get_submodule(parent_name)
        old = getattr(parent, attr)
        if isinstance(old, nn.Embedding):
            setattr(parent, attr, BlockEmbedding(weight))
        elif isinstance(old, nn.Linear):
            setattr(parent, attr, BlockLinear(weight, bias=old.bias is not None))
        else:
            raise TypeError(f"{owner_name} is a {type(old).__name__}, not Linear/Embedding")
        installed.append(name)
    embed = getattr(model, "embed_tokens", None)
    if tie_word_embeddings and isinstance(embed, BlockEmbedding):
        model.lm_head = BlockLinear(embed.weight_blocks)
    return installed


def _packed_row_bytes(w: BlockWeight) -> int:
    """The bytes a row of `w` takes in the arena: Q4_1 grows by a fifth as Q4_1F."""
    if w.qtype == GGMLQuantizationType.Q4_1:
        return w.data.shape[1] // 20 * 24
    return w.data.shape[1]


def pack_block_weights(model: nn.Module) -> tuple[int, bool]:
    """Copy every GGUF block matrix of `model` (BlockLinear segments, BlockEmbedding
    tables) into one buffer backed by huge pages (arena.hugepage_buffer), in module
    order, each at a 64-byte boundary, and point the modules at the copies. A matrix
    shared by several modules (a tied head and the embedding) stays shared. Q4_1
    matrices are copied as Q4_1F (repack_q4_1); the weights' values do not change, so
    neither does any result. Returns (bytes packed, whether huge pages were requested).
    Call before the first forward pass (DecodeStack gathers the weights then). Mutates
    `model`."""
    order: dict[int, BlockWeight] = {}
    for module in model.modules():
        if isinstance(module, BlockLinear):
            for part in module.parts:
                order.setdefault(part.data.data_ptr(), part)
        elif isinstance(module, BlockEmbedding):
            order.setdefault(module.weight_blocks.data.data_ptr(), module.weight_blocks)
    offsets, total = {}, 0
    for ptr, w in order.items():
        offsets[ptr] = total
        total += -(-w.out_features * _packed_row_bytes(w) // 64) * 64
    if not order:
        return 0, False
    arena, huge = hugepage_buffer(total)
    moved: dict[int, BlockWeight] = {}
    for ptr, w in order.items():
        row = _packed_row_bytes(w)
        data = arena[offsets[ptr] : offsets[ptr] + w.out_features * row]
        data = data.view(w.out_features, row)
        if w.qtype == GGMLQuantizationType.Q4_1:
            moved[ptr] = repack_q4_1(w, out=data)
        else:
            data.copy_(w.data)
            moved[ptr] = BlockWeight(data, w.qtype, w.in_features)
    for module in model.modules():
        if isinstance(module, BlockLinear):
            module.parts = tuple(moved[p.data.data_ptr()] for p in module.parts)
        elif isinstance(module, BlockEmbedding):
            module.weight_blocks = moved[module.weight_blocks.data.data_ptr()]
    return total, huge


def module_bytes(*modules: nn.Module) -> int:
    """Bytes of the tensors the modules hold: parameters, buffers and GGUF block weights
    (BlockLinear's row segments, BlockEmbedding's table), each storage counted once, so a
    tied output head counts with the embedding. A block weight that views a mapped file
    counts the storage it views."""
    seen: set[int] = set()
    total = 0
    for module in modules:
        tensors = [*module.parameters(), *module.buffers()]
        for m in module.modules():
            for value in vars(m).values():
                items = value if isinstance(value, tuple) else (value,)
                tensors += [v.data for v in items if isinstance(v, BlockWeight)]
        for t in tensors:
            key = t.untyped_storage().data_ptr()
            if key in seen:
                continue
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total
