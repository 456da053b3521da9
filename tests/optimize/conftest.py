"""Tiny random Llama models for the toolkit's unit tests, and the real default model's
runs for the slow end-to-end ones."""

from __future__ import annotations

import math

import pytest
import torch

from tests.model.tiny import CHATML, build_tokenizer
from tokenmill.model.arch import ArchConfig
from tokenmill.model.models.llama import LlamaForCausalLM
from tokenmill.model.tokenizer import Tokenizer


def tiny_arch(**overrides) -> ArchConfig:
    fields = {
        "architecture": "llama",
        "vocab_size": 300,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_layers": 3,
        "num_heads": 6,
        "num_kv_heads": 2,
        "head_dim": 16,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 256,
        "tie_word_embeddings": True,
        "bos_token_id": 1,
        "eos_token_ids": (2,),
    }
    return ArchConfig(**{**fields, **overrides})


def tiny_model(arch: ArchConfig | None = None, seed: int = 0) -> LlamaForCausalLM:
    """Random weights scaled so attention and RoPE visibly shape the logits."""
    arch = arch or tiny_arch()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(arch)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * noise)
            else:
                p.copy_(noise / math.sqrt(p.shape[-1]))
    return model.requires_grad_(False).eval()


@pytest.fixture(scope="session")
def tiny_tokenizer() -> Tokenizer:
    return Tokenizer(build_tokenizer(), "<|im_start|>", "<|im_end|>", CHATML)
