"""Sliding-window attention over the paged cache against a dense masked reference, and
the window settings read from GGUF metadata and HF configs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tokenmill.model.arch import ArchConfig
from tokenmill.model.kernels import cpu_kernels
from tokenmill.model.layers.attention import PagedAttention
from tokenmill.model.layers.attention_metadata import AttentionMetadata, PrefillSeq

H, HKV, D = 4, 2, 16
SCALE = 0.3


def dense_reference(q, k, v, positions, window):
    """q: (T, H, D) at `positions`; k, v: (C, HKV, D) for positions 0..C-1. Every query
    sees keys at positions p - window + 1 .. p (all keys <= p when window is None)."""
    keys = torch.arange(k.shape[0])
    mask = keys[None, :] <= positions[:, None]
    if window is not None:
        mask &= keys[None, :] > positions[:, None] - window
    k = k.repeat_interleave(H // HKV, dim=1).transpose(0, 1)  # (H, C, D)
    v = v.repeat_interleave(H // HKV, dim=1).transpose(0, 1)
    o = F.scaled_dot_product_attention(q.transpose(0, 1), k, v, attn_mask=mask, scale=SCALE)
    return o.transpose(0, 1).reshape(q.shape[0], H * D)


def scattered_cache(context: int, seed: int):
    """A cache whose first `context` positions live in shuffled slots."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(context, HKV, D, generator=g)
    v = torch.randn(context, HKV, D, generator=g)
    slots = torch.randperm(4 * context, generator=g)[:context]
    cache = torch.zeros(2, 4 * context, HKV, D)
    cache[0, slots], cache[1, slots] = k, v
    return k, v, slots, cache


@pytest.mark.parametrize("window", [None, 1, 5, 64])
@pytest.mark.parametrize("cached", [0, 3, 20])
def test_prefill_matches_dense(window, cached):
    """A chunk of 12 queries after `cached` positions already in the cache."""
    total = cached + 12
    k, v, slots, cache = scattered_cache(total, seed=cached)
    cache[:, slots[cached:]] = 0  # the chunk's own K/V arrive with the call
    q = torch.randn(12, H, D, generator=torch.Generator().manual_seed(7))
    seq = PrefillSeq(0, 12, total, slots)
    meta = AttentionMetadata(slots[cached:], [seq], 12)
    attn = PagedAttention(H, HKV, D, scale=SCALE, sliding_window=window)
    got = attn(q, k[cached:], v[cached:], cache, meta)
    ref = dense_reference(q, k, v, torch.arange(cached, total), window)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


BLOCK = 4


def decode_case(lens: list[int], seed: int = 0):
    """Decodes of sequences with context lengths `lens`, each in its own shuffled blocks
    of BLOCK slots: metadata with block tables, lens, and the slots and mask derived
    from them (what the PyTorch path reads)."""
    g = torch.Generator().manual_seed(seed)
    per_seq = -(-max(lens) // BLOCK)
    num_blocks = per_seq * len(lens) + 1
    cache = torch.randn(2, num_blocks * BLOCK, HKV, D, generator=g)
    tables = (torch.randperm(num_blocks - 1, generator=g) + 1)[: per_seq * len(lens)]
    q = torch.randn(len(lens), H, D, generator=g)
    meta = AttentionMetadata(
        torch.zeros(0, dtype=torch.int64),
        [],
        0,
        decode_lens=torch.tensor(lens),
        block_tables=tables.view(len(lens), per_seq),
        block_size=BLOCK,
    )
    meta.decode_slots_and_mask()
    return q, cache, meta


def decode_reference(q, cache, meta, window):
    rows = []
    for i, n in enumerate(meta.decode_lens.tolist()):
        ctx = cache[:, meta.decode_slots[i, :n]]
        pos = torch.tensor([n - 1])
        rows.append(dense_reference(q[i : i + 1], ctx[0], ctx[1], pos, window))
    return torch.cat(rows).view(q.shape)


@pytest.mark.parametrize("window", [None, 1, 4, 30])
def test_decode_pytorch_path_matches_dense(window):
    q, cache, meta = decode_case([1, 3, 17, 40])
    no_lens = AttentionMetadata(meta.slot_mapping, [], 0, meta.decode_slots, meta.decode_mask)
    attn = PagedAttention(H, HKV, D, scale=SCALE, sliding_window=window)
    got = attn._decode(q, cache, no_lens)
    torch.testing.assert_close(got, decode_reference(q, cache, meta, window), atol=1e-5, rtol=0)


KERNELS = cpu_kernels()


@pytest.mark.skipif(KERNELS is None, reason="no C++ compiler: no native kernel here")
@pytest.mark.parametrize("variant", KERNELS.quant_variants() if KERNELS is not None else [])
@pytest.mark.parametrize("window", [None, 1, 4, 6, 30])
def test_decode_kernel_matches_dense(window, variant):
    """Every instruction set's kernel, windows starting inside a block (6) and on a block
    edge (4), through the block tables."""
    q, cache, meta = decode_case([1, 3, 17, 40], seed=1)
    got = KERNELS.decode_attention(
        q,
        cache,
        meta.block_tables,
        meta.decode_lens,
        BLOCK,
        SCALE,
        window=window or 0,
        variant=variant,
    )
    torch.testing.assert_close(got, decode_reference(q, cache, meta, window), atol=1e-5, rtol=0)
    attn = PagedAttention(H, HKV, D, scale=SCALE, sliding_window=window)
    got = attn._decode(q, cache, meta)  # block tables given: the kernel, default variant
    torch.testing.assert_close(got, decode_reference(q, cache, meta, window), atol=1e-5, rtol=0)


def gemma_metadata(**extra) -> dict:
    base = {
        "general.architecture": "gemma3",
        "gemma3.embedding_length": 640,
        "gemma3.attention.head_count": 4,
        "gemma3.attention.head_count_kv": 1,
        "gemma3.attention.key_length": 256,
        "gemma3.feed_forward_length": 2048,
        "gemma3.block_count": 12,
        "gemma3.context_length": 32768,
        "gemma3.rope.freq_base": 1e6,
        "gemma3.attention.sliding_window": 512,
        "tokenizer.ggml.tokens": ["<pad>", "<eos>", "<bos>", "<end_of_turn>", "a"],
        "tokenizer.ggml.eos_token_id": 1,
        "tokenizer.ggml.bos_token_id": 2,
    }
    return base | extra


def test_gemma3_gguf_defaults():
    """Gemma 3 files omit the pattern, local base and scale: llama.cpp's values apply."""
    arch = ArchConfig.from_gguf(gemma_metadata(), {"token_embd.weight"})
    assert arch.sliding_window == 512
    assert arch.sliding_window_layers == ((True,) * 5 + (False,)) * 2
    assert [arch.layer_window(i) for i in (0, 5, 6, 11)] == [512, None, 512, None]
    assert arch.rope_local_theta == 10000.0 and arch.rope_theta == 1e6
    assert arch.query_scale == 256**-0.5
    assert arch.eos_token_ids == (1, 3)  # <end_of_turn> ends a chat turn
    assert arch.tie_word_embeddings


def test_gguf_explicit_window_keys():
    arch = ArchConfig.from_gguf(
        gemma_metadata(
            **{
                "gemma3.attention.sliding_window_pattern": 3,
                "gemma3.rope.freq_base_swa": 5000.0,
                "gemma3.attention.scale": 0.125,
            }
        ),
        set(),
    )
    assert arch.sliding_window_layers == (True, True, False) * 4
    assert arch.rope_local_theta == 5000.0 and arch.query_scale == 0.125
    listed = [True, False] * 6
    arch = ArchConfig.from_gguf(
        gemma_metadata(**{"gemma3.attention.sliding_window_pattern": listed}), set()
    )
    assert arch.sliding_window_layers == tuple(listed)


def test_llama_gguf_has_no_window():
    md = {
        "general.architecture": "llama",
        "llama.embedding_length": 64,
        "llama.attention.head_count": 4,
        "llama.feed_forward_length": 128,
        "llama.block_count": 2,
        "tokenizer.ggml.tokens": ["a", "b"],
    }
    arch = ArchConfig.from_gguf(md, set())
    assert arch.sliding_window_layers == () and arch.layer_window(0) is None
    assert arch.query_scale is None and arch.rope_local_theta is None


def test_hf_layer_types_and_gemma3_config():
    common = {
        "hidden_size": 64,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "vocab_size": 10,
    }
    gemma = ArchConfig.from_hf(
        common
        | {
            "model_type": "gemma3_text",
            "num_hidden_layers": 7,
            "sliding_window": 8,
            "query_pre_attn_scalar": 24,
            "rope_theta": 1e6,
            "rope_local_base_freq": 1e4,
        }
    )
    assert gemma.sliding_window_layers == (True,) * 5 + (False, True)
    assert gemma.query_scale == 24**-0.5 and gemma.rope_local_theta == 1e4
    full = ArchConfig.from_hf(
        common
        | {
            "model_type": "qwen2",
            "num_hidden_layers": 2,
            "sliding_window": 8,
            "layer_types": ["full_attention", "full_attention"],
        }
    )
    assert full.sliding_window is None and full.sliding_window_layers == ()


def test_inconsistent_window_settings_are_refused():
    with pytest.raises(ValueError, match="entries"):
        ArchConfig.from_gguf(
            gemma_metadata(**{"gemma3.attention.sliding_window_pattern": [True, False]}), set()
        )
