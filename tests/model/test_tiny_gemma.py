"""A tiny random Gemma 3 against transformers' Gemma3ForCausalLM: both loaders, every
attention path, with a window short enough that most keys fall outside it."""

from __future__ import annotations

import pytest
import torch

from tests.model import tiny
from tests.model.runner_steps import RunnerSteps
from tokenmill.model.kernels import cpu_kernels
from tokenmill.model.loader import load_model

transformers = pytest.importorskip("transformers")

WINDOW = 4
LAYERS = 6  # Gemma 3's pattern: five sliding-window layers, then a global one
# Logits here are O(1-10). Each float32 implementation strays from a float64 run of the
# same weights by up to ~2e-5 (on an AMD EPYC, Zen 4: ours 1.6e-5, transformers' 1.8e-5),
# so two of them may differ by twice that; attending past the window moves them by more
# than 0.1 (test_window_changes_the_answer).
ATOL = 4e-5


@pytest.fixture(scope="module")
def tokenizer():
    return tiny.build_tokenizer()


@pytest.fixture(scope="module")
def hf_model(tokenizer):
    config = transformers.Gemma3TextConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        # Not head_dim: a model that scaled by head_dim ** -0.5 would fail.
        query_pre_attn_scalar=24,
        sliding_window=WINDOW,
        max_position_embeddings=128,
        rms_norm_eps=1e-6,
        rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        },
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    assert config.layer_types == ["sliding_attention"] * 5 + ["full_attention"]
    model = transformers.Gemma3ForCausalLM(config)
    tiny.randomize(model, seed=3)
    model.tie_weights()
    return model.eval()


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, tokenizer, hf_model):
    """The same weights through our safetensors loader and our GGUF loader."""
    root = tmp_path_factory.mktemp("gemma")
    hf_dir = tiny.save_hf(hf_model, tokenizer, root / "hf")
    gguf_file = tiny.save_gemma3_gguf(hf_model, tokenizer, root / "tiny.gguf")
    return {
        "hf": load_model(str(hf_dir), dtype="float32"),
        "gguf": load_model(str(gguf_file), dtype="float32"),
    }


def prompt_ids(tok) -> list[int]:
    ids = tok.encode("the lazy fox keeps values in blocks: 12 345 words, words.").ids
    assert len(ids) >= 18
    return ids


def reference_logits(hf_model, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return hf_model(torch.tensor([ids])).logits[0].float()


def run_all_paths(model, ids: list[int], native: bool = False) -> torch.Tensor:
    """(len(ids), vocab) logits through a whole-prompt prefill longer than the window, a
    chunk over a cached context, and single-token decodes (native: the C++ kernel)."""
    runner = RunnerSteps(model, num_slots=64, native=native)
    return torch.cat(
        [
            runner.step([("s", ids[:8])], every_row=True),
            runner.step([("s", ids[8:13])], every_row=True),
            *(runner.step([], [("s", t)]) for t in ids[13:]),
        ]
    )


@pytest.mark.parametrize("source", ["hf", "gguf"])
def test_tiny_gemma3_matches_transformers(loaded, hf_model, tokenizer, source):
    model = loaded[source]
    assert model.arch.architecture in ("gemma3", "gemma3_text")
    assert model.arch.sliding_window == WINDOW
    assert model.arch.sliding_window_layers == (True,) * 5 + (False,)
    assert model.arch.rope_local_theta == 10_000.0 and model.arch.rope_theta == 1e6
    assert model.arch.query_scale == pytest.approx(24**-0.5)
    ids = prompt_ids(tokenizer)
    ref = reference_logits(hf_model, ids)
    assert ref.std() > 0.5, "weights too small to make the comparison meaningful"
    torch.testing.assert_close(run_all_paths(model.model, ids), ref, atol=ATOL, rtol=0)


@pytest.mark.skipif(cpu_kernels() is None, reason="no C++ compiler: no native kernel here")
def test_tiny_gemma3_native_decode_matches_transformers(loaded, hf_model, tokenizer):
    ids = prompt_ids(tokenizer)
    got = run_all_paths(loaded["gguf"].model, ids, native=True)
    torch.testing.assert_close(got, reference_logits(hf_model, ids), atol=ATOL, rtol=0)


def test_window_changes_the_answer(loaded, hf_model, tokenizer):
    """The comparison above could pass with masking off only if the window did not
    matter; it does: the same model attending globally gives other logits."""
    ids = prompt_ids(tokenizer)
    model = loaded["hf"].model
    for layer in model.layers:
        layer.self_attn.attn.window = None
    try:
        unwindowed = run_all_paths(model, ids)
    finally:
        for layer in model.layers:
            layer.self_attn.attn.window = layer.self_attn.sliding_window
    assert (unwindowed - reference_logits(hf_model, ids))[WINDOW:].abs().max() > 0.1


def test_gguf_with_explicit_pattern(tmp_path, tokenizer, hf_model):
    """Files that do write the pattern, local RoPE base and scale are read from them."""
    pattern = [True] * 5 + [False]
    path = tiny.save_gemma3_gguf(hf_model, tokenizer, tmp_path / "p.gguf", pattern=pattern)
    loaded = load_model(str(path), dtype="float32")
    assert loaded.arch.sliding_window_layers == tuple(pattern)
    ids = prompt_ids(tokenizer)
    torch.testing.assert_close(
        run_all_paths(loaded.model, ids), reference_logits(hf_model, ids), atol=ATOL, rtol=0
    )
