"""The servable directory: written from our fused modules, read back by our loader."""

import copy
import dataclasses
import json

import torch

from tests.optimize.conftest import tiny_arch, tiny_model
from tokenmill.model.loader import load_model
from tokenmill.model.quant.int8 import Int8Linear
from tokenmill.optimize.checkpoint import float_state, write_model_dir
from tokenmill.optimize.forward import forward_logits
from tokenmill.optimize.gptq import rtn
from tokenmill.optimize.smoothquant import smooth, smoothquant_int8

IDS = [torch.tensor([5, 17, 42, 9, 100, 3, 77, 8])]


def test_float_directory_loads_to_the_same_logits(tmp_path, tiny_tokenizer):
    model = tiny_model(tiny_arch(tie_word_embeddings=False, attention_bias=True))
    write_model_dir(tmp_path, model.arch, tiny_tokenizer, float_state(model))
    files = {p.name for p in tmp_path.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    } <= files
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["chat_template"]
    loaded = load_model(str(tmp_path), dtype="float32")
    assert torch.equal(forward_logits(loaded.model, IDS), forward_logits(model, IDS))


def test_per_layer_shapes_survive_the_round_trip(tmp_path, tiny_tokenizer):
    arch = tiny_arch(layer_num_heads=(6, 4, 2), layer_intermediate_sizes=(128, 96, 64))
    model = tiny_model(arch)
    assert model.layers[2].self_attn.qkv_proj.weight.shape == (2 * 16 + 2 * 32, 64)
    write_model_dir(tmp_path, arch, tiny_tokenizer, float_state(model))
    loaded = load_model(str(tmp_path), dtype="float32")
    assert loaded.arch.layer_num_heads == (6, 4, 2)
    assert loaded.arch.layer_intermediate_sizes == (128, 96, 64)
    assert torch.equal(forward_logits(loaded.model, IDS), forward_logits(model, IDS))


def test_smoothing_keeps_the_float_function():
    model = tiny_model()
    act_max = {
        f"layers.{i}.{n}": torch.rand(k) * 10 + 0.1
        for i in range(3)
        for n, k in (("self_attn.qkv_proj", 64), ("mlp.gate_up_proj", 64), ("mlp.down_proj", 128))
    }
    smoothed = copy.deepcopy(model)
    smooth(smoothed, act_max, 0.5)
    assert not torch.equal(
        smoothed.layers[0].input_layernorm.weight, model.layers[0].input_layernorm.weight
    )
    assert torch.allclose(
        forward_logits(smoothed, IDS), forward_logits(model, IDS), atol=1e-4, rtol=1e-4
    )


def test_int8_directory_loads_into_int8_layers_with_identical_logits(tmp_path, tiny_tokenizer):
    model = tiny_model()
    act_max = {
        name: torch.rand(lin.in_features) + 0.5
        for name, lin in model.named_modules()
        if name.startswith("layers.") and isinstance(lin, torch.nn.Linear)
    }
    smoothquant_int8(model, act_max, 0.5)
    config = {"quant_method": "tokenmill-w8a8", "bits": 8}
    write_model_dir(tmp_path, model.arch, tiny_tokenizer, float_state(model), config)
    loaded = load_model(str(tmp_path))
    assert loaded.quantization == "int8" and loaded.dtype == torch.float32
    assert isinstance(loaded.model.layers[1].mlp.down_proj, Int8Linear)
    assert isinstance(loaded.model.lm_head, Int8Linear)
    assert torch.equal(forward_logits(loaded.model, IDS), forward_logits(model, IDS))


def test_int4_directory_dequantizes_on_load(tmp_path, tiny_tokenizer):
    model = tiny_model()
    state = float_state(model)
    for name in [k for k in state if k.endswith("_proj.weight")]:
        qw = rtn(state[name], 32)
        del state[name]
        base = name.removesuffix(".weight")
        for leaf, t in qw.packed().items():
            state[f"{base}.{leaf}"] = t
        with torch.no_grad():
            dict(model.named_parameters())[name].copy_(qw.dequantize(32))
    config = {"quant_method": "tokenmill-int4", "bits": 4, "group_size": 32}
    write_model_dir(tmp_path, model.arch, tiny_tokenizer, state, config)
    loaded = load_model(str(tmp_path), dtype="float32")
    assert torch.allclose(forward_logits(loaded.model, IDS), forward_logits(model, IDS), atol=1e-5)


def test_arch_rejects_per_layer_heads_that_break_the_kv_groups():
    import pytest

    from tokenmill.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="multiple of num_kv_heads"):
        tiny_arch(layer_num_heads=(6, 3, 2))
    with pytest.raises(ModelLoadError, match="3 layers"):
        dataclasses.replace(tiny_arch(), layer_intermediate_sizes=(64, 64))
