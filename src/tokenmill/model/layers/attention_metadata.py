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
    (including the new one), padded with slot 0. May be left None when block_tables is
    set: `decode_slots_and_mask` derives it for the paths that need it."""
    decode_mask: torch.Tensor | None = None
    """(num_decodes, 1, 1, max_context) bool: True where decode_slots is a real token."""
    decode_lens: torch.Tensor | None = None
    """(num_decodes,) int64: context length of each decode sequence (new token included)."""
    block_tables: torch.Tensor | None = None
    """(num_decodes, max_blocks) int64: each decode sequence's block ids in position order,
    padded with block 0; the native decode kernel reads the cache through these."""
    block_size: int = 0
    """Tokens per block, with block_tables."""

    @property
    def num_decodes(self) -> int:
        for t in (self.block_tables, self.decode_slots):
            if t is not None:
                return int(t.shape[0])
        return 0

    def decode_slots_and_mask(self) -> tuple[torch.Tensor, torch.Tensor]:
        """decode_slots and decode_mask, derived from block_tables and decode_lens on
        first use (then kept on this record, which is its only mutation)."""
        if self.decode_slots is None:
            n, lens = self.num_decodes, self.decode_lens
            width = int(lens.max())
            offsets = torch.arange(self.block_size, dtype=torch.int64)
            slots = (self.block_tables[:, :, None] * self.block_size + offsets).view(n, -1)
            mask = torch.arange(width)[None, :] < lens[:, None]  # (N, width)
            self.decode_slots = torch.where(mask, slots[:, :width], 0)
            self.decode_mask = mask[:, None, None, :]
        return self.decode_slots, self.decode_mask
