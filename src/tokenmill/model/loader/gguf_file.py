"""The GGUF container: key/value metadata and tensor records over a memory map.

The `gguf` package's reader builds a numpy view per array element, which costs about
20 s of CPU for a 262k-token vocabulary (Gemma 3). This reader parses the same layout
directly: numeric arrays become one `np.frombuffer` each, strings a tight loop. Tensor
data stays in the memory map; dequantizing is left to `gguf.quants`.

Layout (GGUF v2/v3, little-endian): magic "GGUF", version u32, tensor count u64, kv count
u64; then the kvs (key string, value type u32, value); then one record per tensor (name,
n_dims u32, dims u64 innermost first, ggml type u32, offset u64); then the data,
starting at the next multiple of `general.alignment` (default 32).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from tokenmill.errors import ModelLoadError

# GGUF value type -> (struct format, numpy dtype) for the fixed-size ones.
_SCALARS = {
    0: ("<B", np.uint8),
    1: ("<b", np.int8),
    2: ("<H", np.uint16),
    3: ("<h", np.int16),
    4: ("<I", np.uint32),
    5: ("<i", np.int32),
    6: ("<f", np.float32),
    7: ("<?", np.bool_),
    10: ("<Q", np.uint64),
    11: ("<q", np.int64),
    12: ("<d", np.float64),
}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor record; `data` is its bytes, a read-only view of the memory map."""

    name: str
    shape: tuple[int, ...]
    """As GGUF lists it: innermost (contiguous) dimension first."""
    tensor_type: GGMLQuantizationType
    data: np.ndarray
    """(nbytes,) uint8."""


class _Cursor:
    """Reads little-endian values from a byte buffer, advancing an offset."""

    def __init__(self, buf: np.ndarray) -> None:
        self.buf = buf
        self.raw = memoryview(buf)
        self.pos = 0

    def scalar(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(fmt, self.raw, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.scalar("<Q")
        text = bytes(self.raw[self.pos : self.pos + n]).decode("utf-8", errors="replace")
        self.pos += n
        return text

    def value(self, kind: int) -> Any:
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, count = self.scalar("<I"), self.scalar("<Q")
            if item == _STRING:
                return [self.string() for _ in range(count)]
            if item == _ARRAY:
                return [self.value(self.scalar("<I")) for _ in range(count)]
            dtype = np.dtype(_SCALARS[item][1]).newbyteorder("<")
            arr = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
            self.pos += count * dtype.itemsize
            return arr.tolist()
        return self.scalar(_SCALARS[kind][0])


@dataclass
class GGUFFile:
    """An open GGUF file: every metadata key/value and every tensor record."""

    path: Path
    metadata: dict[str, Any]
    """Key -> int, float, bool, str, or a list of those."""
    tensors: list[GGUFTensor]

    @classmethod
    def open(cls, path: str | Path) -> GGUFFile:
        """Parses the header; tensor data is memory-mapped, not read. ModelLoadError
        for a file that is not GGUF v2/v3 or holds a tensor type ggml does not define."""
        buf = np.memmap(path, dtype=np.uint8, mode="r")
        cur = _Cursor(buf)
        if bytes(buf[:4]) != b"GGUF":
            raise ModelLoadError(f"{path} is not a GGUF file.", setting="model")
        cur.pos = 4
        version = cur.scalar("<I")
        if version not in (2, 3):
            raise ModelLoadError(f"GGUF version {version} is not supported.", setting="model")
        n_tensors, n_kv = cur.scalar("<Q"), cur.scalar("<Q")
        metadata = {}
        for _ in range(n_kv):
            key = cur.string()
            metadata[key] = cur.value(cur.scalar("<I"))
        records = []
        for _ in range(n_tensors):
            name = cur.string()
            dims = tuple(cur.scalar("<Q") for _ in range(cur.scalar("<I")))
            kind, offset = cur.scalar("<I"), cur.scalar("<Q")
            try:
                records.append((name, dims, GGMLQuantizationType(kind), offset))
            except ValueError:
                raise ModelLoadError(
                    f"Tensor {name!r} has ggml type {kind}, unknown to this gguf version.",
                    setting="model",
                ) from None
        align = int(metadata.get("general.alignment", 32))
        start = -(-cur.pos // align) * align
        tensors = []
        for name, dims, kind, offset in records:
            block, block_bytes = GGML_QUANT_SIZES[kind]
            nbytes = int(np.prod(dims, dtype=np.int64)) // block * block_bytes
            data = buf[start + offset : start + offset + nbytes]
            tensors.append(GGUFTensor(name, dims, kind, data))
        return cls(Path(path), metadata, tensors)
