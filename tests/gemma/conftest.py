"""Gemma 3 270M (the packaged Q4_K_M GGUF) through our loader and through transformers'
GGUF loader (the reference: the same file, dequantized by the same `gguf` package)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tokenmill.errors import ModelNotFoundError
from tokenmill.model.loader import load_model
from tokenmill.model.registry import PACKAGED_MODELS

pytestmark = pytest.mark.slow
GEMMA_NAME = "gemma3-270m"
GEMMA = PACKAGED_MODELS[GEMMA_NAME]
MAX_MODEL_LEN = 4096


@pytest.fixture(scope="session")
def gemma_file() -> Path:
    try:
        return GEMMA.find()
    except ModelNotFoundError as exc:
        pytest.fail(f"{exc.message} (`make install` installs it)")


@pytest.fixture(scope="session")
def gemma(gemma_file):
    return load_model(GEMMA_NAME, dtype="float32", max_model_len=MAX_MODEL_LEN)


@pytest.fixture(scope="session")
def hf_gemma(gemma_file):
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        gemma_file.parent, gguf_file=gemma_file.name, dtype=torch.float32
    )
    return model.eval()


@pytest.fixture(scope="session")
def hf_tokenizer(gemma_file):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(gemma_file.parent, gguf_file=gemma_file.name)
