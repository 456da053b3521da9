"""Shared, loaded-once fixtures: the packaged SmolLM2 GGUF through our loader and
through transformers (the reference)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from tests.model.reference import import_transformers
from tokenmill.model.loader import load_model
from tokenmill.model.registry import PACKAGED_MODELS

SMOLLM = PACKAGED_MODELS["smollm2-135m-instruct"]


@pytest.fixture(scope="session")
def smollm_file() -> Path:
    if importlib.util.find_spec(SMOLLM.module) is None:
        pytest.fail(f"{SMOLLM.package} is not installed: `make test` installs it")
    return SMOLLM.find()


@pytest.fixture(scope="session")
def smollm(smollm_file):
    return load_model(None, dtype="float32")


@pytest.fixture(scope="session")
def hf_tokenizer(smollm_file):
    return import_transformers().AutoTokenizer.from_pretrained(
        smollm_file.parent, gguf_file=smollm_file.name
    )


@pytest.fixture(scope="session")
def hf_smollm(smollm_file):
    model = import_transformers().AutoModelForCausalLM.from_pretrained(
        smollm_file.parent, gguf_file=smollm_file.name, dtype=torch.float32
    )
    return model.eval()
