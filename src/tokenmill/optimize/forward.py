"""Whole-sequence forward passes for calibration and training, outside the engine.

The engine's model reads and writes a paged KV cache. Here each sequence is one
prefill chunk over its own scratch slots, so attention sees only that sequence's
tokens and nothing is cached between calls; gradients flow when parameters want them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tokenmill.model.layers.attention_metadata import AttentionMetadata, PrefillSeq
from tokenmill.model.models.llama import LlamaForCausalLM


def forward_hidden(model: LlamaForCausalLM, seqs: Sequence[torch.Tensor]) -> torch.Tensor:
    """seqs: 1-D int64 token tensors. Returns the final normed hidden states of all
    tokens, sequence after sequence: (sum of lengths, hidden). Allocates a scratch KV
    cache for the call; mutates nothing of the model."""
    lengths = [int(s.numel()) for s in seqs]
    total = sum(lengths)
    ids = torch.cat(list(seqs))
    positions = torch.cat([torch.arange(n, dtype=torch.int64) for n in lengths])
    prefills, start = [], 0
    for n in lengths:
        slots = torch.arange(start, start + n, dtype=torch.int64)
        prefills.append(PrefillSeq(start, n, n, slots))
        start += n
    attn = AttentionMetadata(
        slot_mapping=torch.arange(total, dtype=torch.int64),
        prefills=prefills,
        num_prefill_tokens=total,
    )
    arch = model.arch
    dtype = model.embed_tokens.weight.dtype
    kv = [
        torch.zeros(2, total, arch.num_kv_heads, arch.head_dim, dtype=dtype)
        for _ in range(len(model.layers))
    ]
    return model(ids, positions, attn, kv)


def forward_logits(model: LlamaForCausalLM, seqs: Sequence[torch.Tensor]) -> torch.Tensor:
    """(sum of lengths, vocab) float32 logits for every position of every sequence."""
    return model.compute_logits(forward_hidden(model, seqs))
