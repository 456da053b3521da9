"""Shared, loaded-once fixtures: the packaged SmolLM2 GGUF through our loader and
through transformers (the reference)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from tokenmill.model.loader import load_model
from tokenmill.model.registry import PACKAGED_MODELS

SMOLLM = PACKAGED_MODELS["smollm2-135m-instruct"]


@pytest.fixture(scope="session")
def smollm_file() -> Path:
    if importlib.util.find_spec(SMOLLM.module) is None:
        pytest.fail(f"{SMOLLM.package} is not installed: `make test` installs it")
    return SMOLLM.find()


@pytest.fixture(scope="session", params=["auto", "float32"], ids=["default", "float32"])
def smollm(request, smollm_file):
    """The packaged model as served by default (its Q4_1/Q8_0 blocks, native kernels,
    when they are built) and with dequantized float32 weights: every golden test runs
    on both."""
    return load_model(None, dtype=request.param)


@pytest.fixture(scope="session")
def hf_tokenizer(smollm_file):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(
        smollm_file.parent, gguf_file=smollm_file.name
    )


@pytest.fixture(scope="session")
def hf_smollm(smollm_file):
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        smollm_file.parent, gguf_file=smollm_file.name, dtype=torch.float32
    )
    return model.eval()
