"""Weights and architecture from a HF model directory (config.json + *.safetensors)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from tokenmill.errors import ModelNotFoundError
from tokenmill.model.arch import ArchConfig
from tokenmill.model.tokenizer import Tokenizer


@dataclass
class SafetensorsCheckpoint:
    """A HF directory: config, tokenizer files and one or more .safetensors shards."""

    path: Path
    arch: ArchConfig
    files: list[Path]
    generation_config: dict | None = None

    @classmethod
    def open(cls, path: str | Path) -> SafetensorsCheckpoint:
        """Reads config.json (and generation_config.json for extra EOS ids);
        ModelNotFoundError when the directory lacks config.json or weights."""
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
        return cls(path, ArchConfig.from_hf(config, gen_config), files, gen_config)

    def sampling_defaults(self) -> dict | None:
        """Sampling fields of generation_config.json (temperature, top_p, ...), as vLLM's
        `--generation-config auto` takes them."""
        return self.generation_config

    def tokenizer(self) -> Tokenizer:
        return Tokenizer.from_hf_dir(self.path)

    def weights(self, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
        """(HF name, tensor in `dtype`) for every tensor of every shard."""
        for file in self.files:
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                    yield name, f.get_tensor(name).to(dtype)
