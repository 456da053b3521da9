"""Architecture name -> model class."""

from __future__ import annotations

from torch import nn

from tokenmill.errors import ModelLoadError
from tokenmill.model.models.llama import LlamaForCausalLM

# Keys are GGUF `general.architecture` values and HF `model_type` values.
MODEL_CLASSES: dict[str, type[nn.Module]] = {
    "llama": LlamaForCausalLM,
    "mistral": LlamaForCausalLM,
    "qwen2": LlamaForCausalLM,
}


def model_class(architecture: str) -> type[LlamaForCausalLM]:
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
