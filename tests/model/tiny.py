"""Builders for tiny random checkpoints: a byte-level BPE tokenizer, a HF directory
written by transformers, and the same weights as a GGUF written as llama.cpp's converter
writes it (q/k rows permuted, tokenizer in metadata)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "paged attention keeps keys and values in fixed size blocks",
    "def add(a, b):\n    return a + b\n",
    "numbers 12 345 6789 and words, words, words.",
] * 20


def build_tokenizer() -> Tokenizer:
    """A ~300-token byte-level BPE with ChatML special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Weights large enough that attention patterns and RoPE visibly shape the logits
    (transformers' 0.02 init gives near-uniform outputs that hide mistakes)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * noise)
            elif name.endswith("bias"):
                p.copy_(0.5 * noise)
            else:
                p.copy_(noise / math.sqrt(p.shape[-1]))


def save_hf(model, tokenizer: Tokenizer, path: Path) -> Path:
    """config.json + model.safetensors + tokenizer.json + tokenizer_config.json."""
    model.save_pretrained(path)
    tokenizer.save(str(path / "tokenizer.json"))
    config = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": CHATML}
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    return path


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py's LlamaModel.permute."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def _llama3_freq_factors(config) -> np.ndarray:
    """llama.cpp's `rope_freqs` tensor for Llama 3.1 scaling, as its converter writes it."""
    rope = config.rope_parameters
    hd = config.head_dim
    freqs = 1.0 / (rope["rope_theta"] ** (np.arange(0, hd, 2, dtype=np.float32) / hd))
    old_len = rope["original_max_position_embeddings"]
    low, high, factor = rope["low_freq_factor"], rope["high_freq_factor"], rope["factor"]
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old_len / high:
            factors.append(1.0)
        elif wavelen > old_len / low:
            factors.append(factor)
        else:
            smooth = (old_len / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


_GGUF_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def save_gguf(model, tokenizer: Tokenizer, path: Path) -> Path:
    """The model as an F32 llama GGUF, the way llama.cpp's converter lays it out."""
    import gguf

    config = model.config
    nh, nkv = config.num_attention_heads, config.num_key_value_heads
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(config.num_hidden_layers)
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(nh)
    w.add_head_count_kv(nkv)
    w.add_rope_freq_base(config.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    w.add_vocab_size(config.vocab_size)
    w.add_rope_dimension_count(config.head_dim)
    rope_type = config.rope_parameters.get("rope_type", "default")
    if rope_type == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(config.rope_parameters["factor"])
    elif rope_type == "llama3":
        w.add_tensor("rope_freqs.weight", _llama3_freq_factors(config))

    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_bos_token_id(vocab["<|im_start|>"])
    w.add_eos_token_id(vocab["<|im_end|>"])
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML)

    for name, tensor in model.state_dict().items():
        array = tensor.detach().float().numpy()
        if name == "lm_head.weight":
            if config.tie_word_embeddings:
                continue
            w.add_tensor("output.weight", array)
            continue
        if name == "model.embed_tokens.weight":
            w.add_tensor("token_embd.weight", array)
            continue
        if name == "model.norm.weight":
            w.add_tensor("output_norm.weight", array)
            continue
        _, _, layer, rest = name.split(".", 3)
        part, _, leaf = rest.rpartition(".")
        if part == "self_attn.q_proj":
            array = _permute(array, nh)
        elif part == "self_attn.k_proj":
            array = _permute(array, nkv)
        w.add_tensor(f"blk.{layer}.{_GGUF_NAMES[part]}.{leaf}", array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


_GEMMA3_GGUF_NAMES = {
    **_GGUF_NAMES,
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
}


def save_gemma3_gguf(model, tokenizer: Tokenizer, path: Path, pattern=None) -> Path:
    """A HF Gemma3ForCausalLM as an F32 gemma3 GGUF, laid out as llama.cpp's converter
    does: norm weights stored as 1 + w, no q/k permutation, the layer pattern and local
    RoPE base left out (readers know them for gemma3) unless `pattern` is given. The
    query scale is written, since the tiny model's differs from Gemma 3's defaults."""
    import gguf

    config = model.config
    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_block_count(config.num_hidden_layers)
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_attention_heads)
    w.add_head_count_kv(config.num_key_value_heads)
    w.add_key_length(config.head_dim)
    w.add_value_length(config.head_dim)
    w.add_rope_freq_base(config.rope_parameters["full_attention"]["rope_theta"])
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    w.add_sliding_window(config.sliding_window)
    w.add_attention_scale(config.query_pre_attn_scalar**-0.5)
    if pattern is not None:
        w.add_sliding_window_pattern(pattern)
        w.add_rope_freq_base_swa(config.rope_parameters["sliding_attention"]["rope_theta"])

    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_bos_token_id(vocab["<|im_start|>"])
    w.add_eos_token_id(vocab["<|im_end|>"])
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML)

    for name, tensor in model.state_dict().items():
        array = tensor.detach().float().numpy()
        if name == "lm_head.weight":
            continue  # tied
        if name.endswith("norm.weight"):
            array = array + np.float32(1.0)
        if name == "model.embed_tokens.weight":
            w.add_tensor("token_embd.weight", array)
            continue
        if name == "model.norm.weight":
            w.add_tensor("output_norm.weight", array)
            continue
        _, _, layer, rest = name.split(".", 3)
        part, _, leaf = rest.rpartition(".")
        w.add_tensor(f"blk.{layer}.{_GEMMA3_GGUF_NAMES[part]}.{leaf}", array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
