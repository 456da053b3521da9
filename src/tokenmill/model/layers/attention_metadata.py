"""The contract between the model runner and the attention layers.

The runner lays a step's new tokens out as: every prefill chunk (a sequence with more
than one new token, or the first token of a prompt), one after another, then every
decode token (one new token per sequence). It fills this record once per step; every
layer reads it unchanged.

The KV cache of one layer is a tensor of shape (2, num_slots, num_kv_heads, head_dim):
index 0 holds keys, 1 values. A slot is `block_id * block_size + offset`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PrefillSeq:
    """One prefill chunk: its new tokens are rows [query_start, query_start+query_len) of
    the step's token tensor; they sit at the end of its `context_len` tokens."""

    query_start: int
    query_len: int
    context_len: int
    """Tokens of this sequence whose K/V exist after this step (cached + new)."""
    context_slots: torch.Tensor
    """(context_len,) int64: cache slot of every context token, in position order."""


@dataclass
class AttentionMetadata:
    """Everything attention needs for one step (see module docstring)."""

    slot_mapping: torch.Tensor
    """(num_tokens,) int64: the slot where each new token's K/V is written."""
    prefills: list[PrefillSeq]
    num_prefill_tokens: int
    """Rows [0, num_prefill_tokens) are prefill tokens; the rest are decodes."""
    decode_slots: torch.Tensor | None = None
    """(num_decodes, max_context) int64: slots of each decode sequence's context tokens
    (including the new one), padded with slot 0."""
    decode_mask: torch.Tensor | None = None
    """(num_decodes, 1, 1, max_context) bool: True where decode_slots is a real token."""
    decode_lens: torch.Tensor | None = None
    """(num_decodes,) int64: context length of each decode sequence (new token included)."""

    @property
    def num_decodes(self) -> int:
        return 0 if self.decode_slots is None else int(self.decode_slots.shape[0])
