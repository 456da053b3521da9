"""Tiny random Llama and Qwen2 checkpoints: our loaders and model against transformers,
and our GGUF loader against our safetensors loader on the same weights."""

from __future__ import annotations

import pytest
import torch

from tests.model import tiny
from tests.model.driver import RunnerDriver
from tests.model.reference import import_transformers
from tokenmill.errors import ConfigError
from tokenmill.model.loader import load_model
from tokenmill.model.quant.int8 import Int8Linear

transformers = import_transformers()

ROPES = {
    "default": {"rope_type": "default", "rope_theta": 10000.0},
    "linear": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
    "llama3": {
        "rope_type": "llama3",
        "rope_theta": 10000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        # With head_dim 16 this puts rotary pairs in all three llama3 regimes.
        "original_max_position_embeddings": 64,
    },
}
# Logits here are O(1-10); float32 noise between implementations is ~1e-6.
ATOL = 2e-5


@pytest.fixture(scope="module")
def tokenizer():
    return tiny.build_tokenizer()


def make_hf_model(kind: str, vocab_size: int, rope: str = "default"):
    common = {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
        "rms_norm_eps": 1e-5,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    if kind == "llama":
        config = transformers.LlamaConfig(**common, rope_parameters=ROPES[rope])
        model = transformers.LlamaForCausalLM(config)
    else:
        config = transformers.Qwen2Config(**common, tie_word_embeddings=True)
        model = transformers.Qwen2ForCausalLM(config)
    tiny.randomize(model, seed=len(rope) + len(kind))
    if config.tie_word_embeddings:
        model.tie_weights()
    return model.eval()


def run_all_paths(loaded, ids: list[int], kv_dtype: torch.dtype | None = None) -> torch.Tensor:
    """(len(ids), vocab) logits through the engine's ModelRunner: a whole-prompt prefill
    of 8 tokens, a chunk of 5 over the cached context, then one-token decodes, covering
    every attention path (4-token blocks, so every step crosses a block boundary). The
    K/V cache is in the model's dtype unless kv_dtype says otherwise."""
    driver = RunnerDriver(loaded, kv_dtype or loaded.dtype, num_blocks=16, block_size=4)
    driver.add("s", ids[:13])
    rows = [driver.step({"s": 8})["s"], driver.step({"s": 5})["s"]]
    for token in ids[13:]:
        driver.append("s", token)
        rows.append(driver.step({"s": 1})["s"])
    return torch.cat(rows)


def reference_logits(hf_model, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return hf_model(torch.tensor([ids])).logits[0].float()


def prompt_ids(tok) -> list[int]:
    ids = tok.encode("the lazy fox keeps values in blocks: 12 345 words, words.").ids
    assert len(ids) >= 18
    return ids


@pytest.mark.parametrize("rope", sorted(ROPES))
def test_llama_gguf_and_safetensors_match_transformers(tmp_path, tokenizer, rope):
    hf_model = make_hf_model("llama", tokenizer.get_vocab_size(), rope)
    hf_dir = tiny.save_hf(hf_model, tokenizer, tmp_path / "hf")
    gguf_file = tiny.save_gguf(hf_model, tokenizer, tmp_path / "tiny.gguf")
    from_hf = load_model(str(hf_dir), dtype="float32")
    from_gguf = load_model(str(gguf_file), dtype="float32")
    assert from_gguf.arch.tie_word_embeddings is from_hf.arch.tie_word_embeddings is False
    assert from_gguf.name == "tiny" and from_hf.name == "hf"

    ids = prompt_ids(tokenizer)
    ref = reference_logits(hf_model, ids)
    assert ref.std() > 0.5, "weights too small to make the comparison meaningful"
    ours_hf = run_all_paths(from_hf, ids)
    ours_gguf = run_all_paths(from_gguf, ids)
    torch.testing.assert_close(ours_hf, ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(ours_gguf, ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(ours_gguf, ours_hf, atol=ATOL, rtol=0)


def test_qwen2_bias_matches_transformers(tmp_path, tokenizer):
    hf_model = make_hf_model("qwen2", tokenizer.get_vocab_size())
    loaded = load_model(str(tiny.save_hf(hf_model, tokenizer, tmp_path)), dtype="float32")
    assert loaded.arch.attention_bias and loaded.arch.tie_word_embeddings
    assert loaded.model.layers[0].self_attn.qkv_proj.bias is not None
    ids = prompt_ids(tokenizer)
    torch.testing.assert_close(
        run_all_paths(loaded, ids), reference_logits(hf_model, ids), atol=ATOL, rtol=0
    )


def test_tokenizers_of_both_loaders_agree(tmp_path, tokenizer):
    hf_model = make_hf_model("llama", tokenizer.get_vocab_size())
    from_hf = load_model(str(tiny.save_hf(hf_model, tokenizer, tmp_path / "hf")))
    from_gguf = load_model(str(tiny.save_gguf(hf_model, tokenizer, tmp_path / "t.gguf")))
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "<|im_start|>user\nthe fox, 12345 ü 👋<|im_end|>\n  words  "
    expected = hf_tok.encode(text, add_special_tokens=False)
    for tok in (from_hf.tokenizer, from_gguf.tokenizer):
        assert tok.encode(text) == expected
        assert tok.decode(expected, skip_special_tokens=False) == text
        assert tok.eos_token_id == hf_tok.convert_tokens_to_ids("<|im_end|>")
        assert tok.all_special_ids == {0, 1, 2}
    messages = [{"role": "user", "content": "hi"}]
    rendered = hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert from_hf.tokenizer.apply_chat_template(messages) == rendered
    assert from_gguf.tokenizer.apply_chat_template(messages) == rendered


def test_bfloat16_load(tmp_path, tokenizer):
    hf_model = make_hf_model("llama", tokenizer.get_vocab_size())
    path = str(tiny.save_hf(hf_model, tokenizer, tmp_path))
    loaded = load_model(path, dtype="bfloat16")
    assert loaded.dtype is torch.bfloat16
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in loaded.model.parameters())
    ids = prompt_ids(tokenizer)
    ref = reference_logits(hf_model, ids)
    ours = run_all_paths(loaded, ids)
    assert ours.dtype is torch.float32
    # bfloat16 keeps ~3 significant digits; through two layers that is ~2% of the scale.
    assert (ours - ref).abs().max() < 0.05 * ref.abs().max()


def test_int8_with_bias_and_tied_head(tmp_path, tokenizer):
    """int8 weights and activations on the model with biases and a tied output head
    (which gets an int8 copy of the embedding), with the bfloat16 K/V the engine pairs
    with int8."""
    hf_model = make_hf_model("qwen2", tokenizer.get_vocab_size())
    loaded = load_model(str(tiny.save_hf(hf_model, tokenizer, tmp_path)), quantization="int8")
    assert isinstance(loaded.model.lm_head, Int8Linear)
    qkv = loaded.model.layers[0].self_attn.qkv_proj
    assert isinstance(qkv, Int8Linear) and qkv.bias is not None
    ids = prompt_ids(tokenizer)
    ref = reference_logits(hf_model, ids)
    ours = run_all_paths(loaded, ids, kv_dtype=torch.bfloat16)
    # Measured: max |diff| 2.9% of max |logit| (0.099 of 3.4), every argmax equal. Twice
    # that leaves room for summation order on other CPUs (int8 products are exact); a
    # wrong scale or a dropped bias moves logits by their whole size.
    assert (ours - ref).abs().max() < 0.06 * ref.abs().max()
    assert torch.equal(ours.argmax(-1), ref.argmax(-1))


def test_auto_quantization_is_int8_without_kernel_blocks(tmp_path, tokenizer):
    """--quantization auto (the edge profile's): a float checkpoint becomes int8."""
    hf_model = make_hf_model("llama", tokenizer.get_vocab_size())
    loaded = load_model(str(tiny.save_hf(hf_model, tokenizer, tmp_path)), quantization="auto")
    assert loaded.quantization == "int8" and loaded.kernel_path == "int8"
    assert isinstance(loaded.model.layers[0].self_attn.qkv_proj, Int8Linear)


def test_auto_quantization_keeps_the_packaged_gguf_blocks():
    """The default model's own Q4_1 blocks are smaller than int8: auto keeps them where
    the native kernels run, and asks for int8 nowhere."""
    from tokenmill.model.kernels import cpu_kernels

    if cpu_kernels() is None:
        pytest.skip("no native kernels here: auto falls back to int8")
    loaded = load_model(None, max_model_len=64, quantization="auto")
    assert loaded.quantization is None
    assert loaded.kernel_path.startswith("gguf-blocks:")
    assert not any(isinstance(m, Int8Linear) for m in loaded.model.modules())


def test_max_model_len(tmp_path, tokenizer):
    hf_model = make_hf_model("llama", tokenizer.get_vocab_size())
    path = str(tiny.save_hf(hf_model, tokenizer, tmp_path))
    loaded = load_model(path, max_model_len=32)
    assert loaded.max_model_len == 32 and loaded.model.rotary.max_positions == 32
    assert load_model(path).max_model_len == 128
    with pytest.raises(ConfigError, match="max_model_len"):
        load_model(path, max_model_len=129)
