"""Weights and architecture from a HF model directory (config.json + *.safetensors)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from tokenmill.errors import ModelLoadError, ModelNotFoundError
from tokenmill.model.arch import ArchConfig
from tokenmill.model.quant import int4
from tokenmill.model.quant.int8 import INT8_METHOD
from tokenmill.model.tokenizer import Tokenizer

QUANT_METHODS = (INT8_METHOD, int4.INT4_METHOD)


@dataclass
class SafetensorsCheckpoint:
    """A HF directory: config, tokenizer files and one or more .safetensors shards."""

    path: Path
    arch: ArchConfig
    files: list[Path]
    generation_config: dict | None = None
    quantization: dict[str, Any] | None = None
    """config.json's `quantization_config` (one of tokenmill's own methods), or None."""

    @classmethod
    def open(cls, path: str | Path) -> SafetensorsCheckpoint:
        """Reads config.json (and generation_config.json for extra EOS ids);
        ModelNotFoundError when the directory lacks config.json or weights,
        ModelLoadError for a quantization method tokenmill does not read."""
        path = Path(path)
        config_file = path / "config.json"
        files = sorted(path.glob("*.safetensors"))
        if not config_file.exists() or not files:
            raise ModelNotFoundError(
                f"{path} is not a model directory: it needs config.json and *.safetensors "
                "files (as written by transformers' save_pretrained)."
            )
        config = json.loads(config_file.read_text())
        gen_file = path / "generation_config.json"
        gen_config = json.loads(gen_file.read_text()) if gen_file.exists() else None
        quant = config.get("quantization_config")
        if quant is not None and quant.get("quant_method") not in QUANT_METHODS:
            raise ModelLoadError(
                f"{path}: quantization method {quant.get('quant_method')!r} is not supported; "
                f"tokenmill reads {QUANT_METHODS} (as `tokenmill optimize quantize` writes).",
                setting="model",
            )
        return cls(path, ArchConfig.from_hf(config, gen_config), files, gen_config, quant)

    def sampling_defaults(self) -> dict | None:
        """Sampling fields of generation_config.json (temperature, top_p, ...), as vLLM's
        `--generation-config auto` takes them."""
        return self.generation_config

    def tokenizer(self) -> Tokenizer:
        return Tokenizer.from_hf_dir(self.path)

    def weights(self, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
        """(HF name, tensor) for every tensor of every shard: floats in `dtype`, an int8
        checkpoint's qweight as stored, an int4 checkpoint's (qweight, scales, mins)
        triples dequantized into one `weight` in `dtype`."""
        group = int(self.quantization.get("group_size", 0)) if self.quantization else 0
        pending: dict[str, dict[str, torch.Tensor]] = {}
        for file in self.files:
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                    tensor = f.get_tensor(name)
                    base, _, leaf = name.rpartition(".")
                    if group and leaf in ("qweight", "scales", "mins"):
                        parts = pending.setdefault(base, {})
                        parts[leaf] = tensor
                        if len(parts) == 3:
                            w = int4.dequantize(
                                parts["qweight"], parts["scales"], parts["mins"], group
                            )
                            yield f"{base}.weight", w.to(dtype)
                            del pending[base]
                    elif tensor.dtype == torch.int8 or leaf == "scale":
                        yield name, tensor
                    else:
                        yield name, tensor.to(dtype)
        if pending:
            raise ValueError(f"{self.path}: int4 tensors missing parts: {sorted(pending)}.")
