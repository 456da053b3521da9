"""Paged attention over the flat token layout of `AttentionMetadata`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tokenmill.model.kernels import inference_kernels
from tokenmill.model.layers.attention_metadata import AttentionMetadata


class PagedAttention(nn.Module):
    """Scaled dot-product attention that stores K/V in a slot-addressed cache.

    Holds no weights. Grouped-query attention is native: `num_heads` query heads share
    `num_kv_heads` key/value heads, query head h reading kv head h // (num_heads //
    num_kv_heads), as HF's `repeat_kv` lays them out.

    With a `sliding_window` W, a query at position p attends to keys p - W + 1 .. p only.
    Older keys stay in the cache (other layers and prefix-cache hits share the blocks);
    they are masked, and skipped where a whole range falls outside every window.
    """

    def __init__(
        self,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        scale: float | None = None,
        sliding_window: int | None = None,
    ) -> None:
        """scale: multiplier of q.k, default head_dim ** -0.5; sliding_window: None for
        global attention."""
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.group = num_heads // num_kv_heads
        self.scale = head_dim**-0.5 if scale is None else scale
        self.window = sliding_window

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        kv_cache: torch.Tensor,
        attn: AttentionMetadata,
    ) -> torch.Tensor:
        """q: (T, num_heads, head_dim); k, v: (T, num_kv_heads, head_dim), already rotated.
        kv_cache: (2, num_slots, num_kv_heads, head_dim), written in place at
        `attn.slot_mapping` before attending. Returns (T, num_heads * head_dim)."""
        kv_cache[0].index_copy_(0, attn.slot_mapping, k.to(kv_cache.dtype))
        kv_cache[1].index_copy_(0, attn.slot_mapping, v.to(kv_cache.dtype))
        return self.attend(q, k, v, kv_cache, attn)

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        kv_cache: torch.Tensor,
        attn: AttentionMetadata,
    ) -> torch.Tensor:
        """As forward, with this step's K/V already in kv_cache (a fused kernel stored
        them). Reads the cache; mutates nothing. Returns (T, num_heads * head_dim)."""
        if not attn.prefills:  # decodes only: the kernel's output is the whole result
            return self._decode(q, kv_cache, attn).view(q.shape[0], -1)
        out = torch.empty_like(q)  # (T, nh, hd)
        for seq in attn.prefills:
            rows = slice(seq.query_start, seq.query_start + seq.query_len)
            out[rows] = self._prefill(q[rows], k[rows], v[rows], kv_cache, seq)
        if attn.num_decodes:
            out[attn.num_prefill_tokens :] = self._decode(
                q[attn.num_prefill_tokens :], kv_cache, attn
            )
        return out.view(q.shape[0], self.num_heads * self.head_dim)

    def _prefill(self, q, k, v, kv_cache, seq) -> torch.Tensor:
        """Causal attention of one chunk whose queries are the last `query_len` of its
        `context_len` positions. Returns (query_len, nh, hd).

        The native kernel, where it is built for float32 and takes this query group, is
        ATen's flash attention's arithmetic in another order, 2.3-3.4x faster on one Zen 5
        core (docs/performance.md); ATen's runs otherwise."""
        window = self.window
        # Keys before position `first` lie outside every query's window (0 when nothing
        # is cached before this chunk: its own K/V are then the whole context).
        first = 0 if window is None else max(0, seq.context_len - seq.query_len - window + 1)
        if seq.context_len != seq.query_len:
            ctx = kv_cache.index_select(1, seq.context_slots[first:]).to(q.dtype)
            k, v = ctx[0], ctx[1]  # (C, nkv, hd)
        # Query row i is key column offset + i: it sees columns up to that one, and with a
        # window no further back than window - 1 before it.
        offset = seq.context_len - seq.query_len - first
        kernel = inference_kernels(q)
        if (
            kernel is not None
            and q.dtype == torch.float32
            and 0 < self.group <= kernel.prefill_attention_lanes()
        ):
            return kernel.prefill_attention(q, k, v, offset, first, window or 0, self.scale)
        q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)  # heads first
        if offset == 0 and (window is None or seq.query_len <= window):
            return self._sdpa(q, k, v, None).transpose(0, 1)  # plain causal
        mask = torch.ones(seq.query_len, k.shape[1], dtype=torch.bool, device=q.device)
        mask = mask.tril_(offset)  # (ql, C)
        if window is not None:
            mask = mask.triu_(offset - window + 1)
        return self._sdpa(q, k, v, mask).transpose(0, 1)

    def _sdpa(self, q, k, v, mask) -> torch.Tensor:
        """q (nh, ql, hd), k and v (nkv, C, hd); mask (ql, C) bool, or None for causal
        over a chunk that is the whole context. Returns (nh, ql, hd).

        Each KV head's query group is a batch entry over an expanded (not copied) K/V
        view: with `enable_gqa` ATen's CPU attention falls back to its math path, which
        measured 3.8x (causal, 512 tokens) to 4.8x (masked, 512 x 1024) slower than the
        flash kernel this layout reaches."""
        if self.group > 1:
            nkv = k.shape[0]
            q = q.unflatten(0, (nkv, self.group))
            k = k.unsqueeze(1).expand(nkv, self.group, *k.shape[1:])
            v = v.unsqueeze(1).expand(nkv, self.group, *v.shape[1:])
        o = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None, scale=self.scale
        )
        return o.flatten(0, 1) if self.group > 1 else o

    def _decode(self, q, kv_cache, attn) -> torch.Tensor:
        """One new token per sequence, all sequences in one call. Returns (N, nh, hd).
        Uses the native kernel (reads K/V in place through the block tables) when it is
        built, q is float32 and the runner gave block tables."""
        kernel = inference_kernels(q)
        if (
            kernel is not None
            and q.dtype == torch.float32
            and attn.block_tables is not None
            and attn.decode_lens is not None
        ):
            return kernel.decode_attention(
                q,
                kv_cache,
                attn.block_tables,
                attn.decode_lens,
                attn.block_size,
                self.scale,
                window=self.window or 0,
            )
        slots, mask = attn.decode_slots_and_mask()  # (N, S), (N, 1, 1, S)
        if self.window is not None:
            lens = attn.decode_lens
            if lens is None:
                lens = mask.view(mask.shape[0], -1).sum(-1)
            first = (lens - self.window).clamp_min(0)  # (N,) oldest position in the window
            lo = int(first.min())  # columns before lo are outside every row's window
            cols = torch.arange(lo, slots.shape[1])
            slots = slots[:, lo:]
            mask = mask[..., lo:] & (cols[None, :] >= first[:, None])[:, None, None, :]
        n, width = slots.shape
        # index_select on the flat slot list is ~3x faster than advanced indexing.
        ctx = kv_cache.index_select(1, slots.reshape(-1)).to(q.dtype)
        ctx = ctx.view(2, n, width, self.num_kv_heads, self.head_dim)  # (2, N, S, nkv, hd)
        k = ctx[0].transpose(1, 2)  # (N, nkv, S, hd)
        v = ctx[1].transpose(1, 2)
        # Fold each kv head's query group into the query-length axis: no K/V repeat.
        q = q.view(n, self.num_kv_heads, self.group, self.head_dim)  # (N, nkv, G, hd)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        return o.view(n, self.num_heads, self.head_dim)
