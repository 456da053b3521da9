"""Architecture name -> model class."""

from __future__ import annotations

from torch import nn

from tokenmill.errors import ModelLoadError
from tokenmill.model.models.gemma3 import Gemma3ForCausalLM
from tokenmill.model.models.llama import LlamaForCausalLM

CausalLM = LlamaForCausalLM | Gemma3ForCausalLM
"""The model classes: each takes (ArchConfig, max_positions), has forward(input_ids,
positions, attn, kv_caches), compute_logits(hidden) and the classmethod fuse_weights."""

# Keys are GGUF `general.architecture` values and HF `model_type` values.
MODEL_CLASSES: dict[str, type[nn.Module]] = {
    "llama": LlamaForCausalLM,
    "mistral": LlamaForCausalLM,
    "qwen2": LlamaForCausalLM,
    "gemma3": Gemma3ForCausalLM,
    "gemma3_text": Gemma3ForCausalLM,
}


def model_class(architecture: str) -> type[CausalLM]:
    """The class implementing `architecture`; ModelLoadError naming the supported
    ones when there is none."""
    try:
        return MODEL_CLASSES[architecture]
    except KeyError:
        raise ModelLoadError(
            f"Model architecture {architecture!r} is not supported; supported: "
            f"{sorted(MODEL_CLASSES)}.",
            setting="model",
        ) from None
