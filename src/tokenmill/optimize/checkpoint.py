"""Reading a model to optimize and writing the servable HF-style directory it becomes.

The model is read through tokenmill's own loader in float32 (a packaged name, a GGUF or
a HF directory), so every method works on the fused module the engine serves. The
writer splits the fused projections back into HF names, so the output directory reads
like `save_pretrained`'s: config.json, model.safetensors, generation_config.json,
tokenizer.json and tokenizer_config.json (with the chat template).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from tokenmill.errors import ConfigError
from tokenmill.model.arch import ArchConfig
from tokenmill.model.loader import LoadedModel, load_model
from tokenmill.model.registry import resolve_model
from tokenmill.model.tokenizer import Tokenizer

WEIGHTS_FILE = "model.safetensors"
_QKV = re.compile(r"layers\.(\d+)\.self_attn\.qkv_proj\.(\w+)")
_GATE_UP = re.compile(r"layers\.(\d+)\.mlp\.gate_up_proj\.(\w+)")


def load_float(model: str | None) -> LoadedModel:
    """`model` (None: the default packaged model) loaded in float32 with its weights
    dequantized: the starting point of every method. Nothing is quantized."""
    return load_model(model, dtype="float32")


def read_arch(model: str | None) -> ArchConfig:
    """The architecture of `model` from its header or config.json, without its weights."""
    from tokenmill.model.loader.gguf import GGUFCheckpoint
    from tokenmill.model.loader.safetensors import SafetensorsCheckpoint

    source = resolve_model(model)
    if source.format == "gguf":
        return GGUFCheckpoint.open(source.path).arch
    return SafetensorsCheckpoint.open(source.path).arch


def weights_size(model: str | None) -> int:
    """Bytes on disk of the weights `model` resolves to (the .gguf file, or a
    directory's weight files)."""
    source = resolve_model(model)
    if source.path.is_file():
        return source.path.stat().st_size
    return files_size(source.path)


def files_size(path: Path) -> int:
    """Bytes of the weight files in a directory (*.safetensors, *.gguf, *.onnx and ONNX
    external data)."""
    patterns = ("*.safetensors", "*.gguf", "*.onnx", "*.onnx.data")
    return sum(f.stat().st_size for p in patterns for f in path.glob(p))


def unfuse(arch: ArchConfig, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our fused state dict (qkv_proj, gate_up_proj) -> HF names. Every leaf of a fused
    projection (weight, bias, qweight, scale, scales, mins) is split along its rows, so
    this serves float and quantized layers alike. Tensors come back contiguous."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name.startswith("rotary."):
            continue
        if m := _QKV.fullmatch(name):
            layer, leaf = int(m.group(1)), m.group(2)
            q = arch.heads_of(layer) * arch.head_dim
            parts = tensor.split((q, arch.kv_size, arch.kv_size), dim=0)
            for proj, part in zip(("q_proj", "k_proj", "v_proj"), parts, strict=True):
                out[f"model.layers.{layer}.self_attn.{proj}.{leaf}"] = part.contiguous()
        elif m := _GATE_UP.fullmatch(name):
            layer, leaf = int(m.group(1)), m.group(2)
            gate, up = tensor.chunk(2, dim=0)
            out[f"model.layers.{layer}.mlp.gate_proj.{leaf}"] = gate.contiguous()
            out[f"model.layers.{layer}.mlp.up_proj.{leaf}"] = up.contiguous()
        elif name.startswith("lm_head."):
            out[name] = tensor.contiguous()
        else:
            out[f"model.{name}"] = tensor.contiguous()
    return out


def hf_config(arch: ArchConfig, quantization: Mapping[str, Any] | None = None) -> dict:
    """config.json for `arch`, in transformers' Llama keys. Per-layer shapes of a pruned
    model go under `num_attention_heads_per_layer` / `intermediate_size_per_layer`
    (tokenmill's loader reads them; transformers does not)."""
    if arch.rope_scaling is not None and arch.rope_scaling.kind == "freq_factors":
        raise ConfigError(
            "This model's RoPE uses llama.cpp frequency factors, which config.json cannot "
            "express; start from its Hugging Face directory instead.",
            setting="model",
        )
    config: dict[str, Any] = {
        "architectures": [
            "Qwen2ForCausalLM" if arch.architecture == "qwen2" else "LlamaForCausalLM"
        ],
        "model_type": arch.architecture,
        "vocab_size": arch.vocab_size,
        "hidden_size": arch.hidden_size,
        "intermediate_size": max(arch.layer_intermediate_sizes or (arch.intermediate_size,)),
        "num_hidden_layers": arch.num_layers,
        "num_attention_heads": max(arch.layer_num_heads or (arch.num_heads,)),
        "num_key_value_heads": arch.num_kv_heads,
        "head_dim": arch.head_dim,
        "rope_theta": arch.rope_theta,
        "rms_norm_eps": arch.rms_norm_eps,
        "max_position_embeddings": arch.max_position_embeddings,
        "tie_word_embeddings": arch.tie_word_embeddings,
        "attention_bias": arch.attention_bias,
        "hidden_act": "silu",
        "torch_dtype": "float32",
        "bos_token_id": arch.bos_token_id,
        "eos_token_id": list(arch.eos_token_ids),
    }
    if arch.layer_num_heads:
        config["num_attention_heads_per_layer"] = list(arch.layer_num_heads)
    if arch.layer_intermediate_sizes:
        config["intermediate_size_per_layer"] = list(arch.layer_intermediate_sizes)
    scaling = arch.rope_scaling
    if scaling is not None:
        config["rope_scaling"] = {
            "rope_type": scaling.kind,
            "factor": scaling.factor,
            "low_freq_factor": scaling.low_freq_factor,
            "high_freq_factor": scaling.high_freq_factor,
            "original_max_position_embeddings": scaling.original_max_position_embeddings,
        }
    if quantization is not None:
        config["quantization_config"] = dict(quantization)
    return config


def write_tokenizer(out: Path, tokenizer: Tokenizer, max_len: int) -> None:
    """tokenizer.json and tokenizer_config.json (special tokens, chat template) into
    `out`, readable by tokenmill's Tokenizer.from_hf_dir and by transformers."""
    tokenizer.backend.save(str(out / "tokenizer.json"))
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": tokenizer.bos_token,
        "eos_token": tokenizer.eos_token,
        "model_max_length": max_len,
        "clean_up_tokenization_spaces": False,
    }
    if tokenizer.chat_template is not None:
        config["chat_template"] = tokenizer.chat_template
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def write_model_dir(
    out: Path,
    arch: ArchConfig,
    tokenizer: Tokenizer,
    state: Mapping[str, torch.Tensor],
    quantization: Mapping[str, Any] | None = None,
) -> None:
    """Write a servable directory: `state` (our fused names, any leaf kinds) as HF-named
    safetensors, config.json (with `quantization` as its quantization_config),
    generation_config.json and the tokenizer. Creates `out` if needed."""
    out.mkdir(parents=True, exist_ok=True)
    tensors = unfuse(arch, state)
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    config = hf_config(arch, quantization)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    generation = {"bos_token_id": arch.bos_token_id, "eos_token_id": list(arch.eos_token_ids)}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    write_tokenizer(out, tokenizer, arch.max_position_embeddings)


def float_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's persistent state (weights, quantized buffers), detached."""
    return {k: v.detach() for k, v in module.state_dict().items()}
