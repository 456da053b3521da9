"""Turns a scheduled step into one forward pass and the logits that need sampling."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokenmill.config import CacheConfig
from tokenmill.engine.scheduler import SchedulerOutput
from tokenmill.model.layers.attention_metadata import AttentionMetadata, PrefillSeq


@dataclass
class LogitsRequest:
    """Which rows of a step's logits belong to a scheduled request."""

    sample_row: int | None
    """Row predicting the request's next token; None if its prompt is still incomplete
    after this step."""
    prompt_rows: tuple[int, int] | None
    """[start, end) rows predicting prompt tokens (for prompt logprobs)."""
    prompt_targets: list[int] | None
    """Prompt token ids those rows predict."""
    verify_rows: tuple[int, int] | None = None
    """[start, end) rows of a speculating sequence: row j predicts the token after its
    j-th scheduled position (the last real token, then each draft). Set instead of
    sample_row."""


@dataclass
class StepLogits:
    """The model's output for one step: float32 logits for the rows that need them."""

    logits: torch.Tensor | None
    """(num_rows, vocab) float32, or None when no row needed logits."""
    per_request: list[LogitsRequest]
    """Parallel to SchedulerOutput.scheduled."""


def kv_cache_block_bytes(
    num_layers: int, num_kv_heads: int, head_dim: int, block_size: int, dtype: torch.dtype
) -> int:
    """Bytes one KV block takes across all layers (keys and values)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return 2 * num_layers * block_size * num_kv_heads * head_dim * itemsize


class ModelRunner:
    """Owns the model's KV cache tensors and runs forward passes.

    The pool is sized from `CacheConfig.memory_gib` (or `num_blocks`). With
    `CacheConfig.prefault` (the default) every page is written here, at start. Without
    it, torch.empty leaves pages uncommitted until a block is first written, and since
    the block pool hands out the least recently freed block, a long run touches every
    block in turn: resident memory then climbs by up to the whole cache (the soak of
    issue 14 read that climb as a leak). The null block 0 is zeroed either way, because
    padded attention reads point at it.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        arch,
        dtype: torch.dtype,
        cache: CacheConfig,
        max_model_len: int,
    ):
        """dtype: the KV cache's storage dtype (the model casts into it)."""
        self.model = model
        self.arch = arch
        self.dtype = dtype
        self.block_size = cache.block_size
        block_bytes = kv_cache_block_bytes(
            arch.num_layers, arch.num_kv_heads, arch.head_dim, cache.block_size, dtype
        )
        if cache.num_blocks is not None:
            self.num_blocks = cache.num_blocks
        else:
            self.num_blocks = int(cache.memory_gib * (1 << 30)) // block_bytes
        min_blocks = -(-max_model_len // cache.block_size) + 1
        if self.num_blocks < min_blocks:
            raise ValueError(
                f"KV cache of {self.num_blocks} blocks cannot hold one {max_model_len}-token "
                f"sequence ({min_blocks} blocks needed): raise the KV cache memory or lower "
                "max_model_len."
            )
        num_slots = self.num_blocks * cache.block_size
        shape = (2, num_slots, arch.num_kv_heads, arch.head_dim)
        self.kv_caches = [torch.empty(shape, dtype=dtype) for _ in range(arch.num_layers)]
        for kv in self.kv_caches:
            if cache.prefault:
                kv.zero_()
            else:
                kv[:, : cache.block_size].zero_()
        self._offsets = torch.arange(cache.block_size, dtype=torch.int64)

    def _slots(self, block_ids: list[int], start: int, end: int) -> torch.Tensor:
        """(end-start,) int64 cache slots of positions [start, end) of a sequence."""
        bt = torch.tensor(block_ids, dtype=torch.int64)
        slots = (bt[:, None] * self.block_size + self._offsets).flatten()
        return slots[start:end]

    @torch.inference_mode()
    def copy_blocks(self, pairs: list[tuple[int, int]]) -> None:
        """Copy whole KV blocks, (source id, destination id) each, in every layer: the
        copy half of the cache's copy-on-write (a forked beam's partly filled block)."""
        if not pairs:
            return
        bs = self.block_size
        src = torch.tensor([s for s, _ in pairs], dtype=torch.int64)
        dst = torch.tensor([d for _, d in pairs], dtype=torch.int64)
        src_slots = (src[:, None] * bs + self._offsets).flatten()
        dst_slots = (dst[:, None] * bs + self._offsets).flatten()
        for kv in self.kv_caches:  # (2, num_slots, kv_heads, head_dim)
            kv[:, dst_slots] = kv[:, src_slots]

    @torch.inference_mode()
    def execute(self, sched: SchedulerOutput) -> StepLogits:
        """Run the model over the step's new tokens and return the logits to sample.
        Writes the new tokens' K/V into the cache; mutates nothing else."""
        prefills = [s for s in sched.scheduled if s.num_new_tokens > 1]
        decodes = [s for s in sched.scheduled if s.num_new_tokens == 1]
        order = prefills + decodes

        token_ids: list[int] = []
        positions: list[int] = []
        slot_parts: list[torch.Tensor] = []
        prefill_meta: list[PrefillSeq] = []
        row_of_last: dict[int, int] = {}
        logit_rows: list[int] = []
        per_request: dict[int, LogitsRequest] = {}

        for s in prefills:
            req, start = s.request, s.request.num_computed_tokens
            end = start + s.num_new_tokens
            q_start = len(token_ids)
            token_ids.extend(req.scheduled_token_ids(start, end))
            positions.extend(range(start, end))
            ctx_slots = self._slots(s.block_ids, 0, end)
            slot_parts.append(ctx_slots[start:end])
            prefill_meta.append(PrefillSeq(q_start, s.num_new_tokens, end, ctx_slots))
            row_of_last[id(s)] = q_start + s.num_new_tokens - 1

        num_prefill_tokens = len(token_ids)
        tables = lens = None
        if decodes:
            bs = self.block_size
            ctx_lens = [s.request.num_computed_tokens + 1 for s in decodes]
            max_blocks = -(-max(ctx_lens) // bs)
            rows, decode_slots = [], []
            for s, n in zip(decodes, ctx_lens, strict=True):
                ids = s.block_ids[:max_blocks]
                rows.append(ids + [0] * (max_blocks - len(ids)))
                pos = n - 1
                decode_slots.append(ids[pos // bs] * bs + pos % bs)
                row_of_last[id(s)] = len(token_ids)
                token_ids.append(s.request.token_ids_slice(pos, pos + 1)[0])
                positions.append(pos)
            tables = torch.tensor(rows, dtype=torch.int64)
            lens = torch.tensor(ctx_lens, dtype=torch.int64)
            slot_parts.append(torch.tensor(decode_slots, dtype=torch.int64))

        # Rows whose logits are needed: prompt-logprob rows, then the sampling row.
        for s in order:
            req = s.request
            start, end = req.num_computed_tokens, req.num_computed_tokens + s.num_new_tokens
            prompt_rows = prompt_targets = None
            if req.wants_prompt_logprobs and start < req.num_prompt_tokens - 1:
                last = min(end, req.num_prompt_tokens - 1)
                first_row = row_of_last[id(s)] - (end - 1 - start)
                prompt_rows = (len(logit_rows), len(logit_rows) + last - start)
                logit_rows.extend(range(first_row, first_row + last - start))
                prompt_targets = req.prompt_token_ids[start + 1 : last + 1]
            sample_row = verify_rows = None
            num_drafts = len(req.draft_token_ids)
            if num_drafts:
                verify_rows = (len(logit_rows), len(logit_rows) + num_drafts + 1)
                logit_rows.extend(range(row_of_last[id(s)] - num_drafts, row_of_last[id(s)] + 1))
            elif end >= req.num_tokens and req.max_tokens > 0:
                sample_row = len(logit_rows)
                logit_rows.append(row_of_last[id(s)])
            per_request[id(s)] = LogitsRequest(sample_row, prompt_rows, prompt_targets, verify_rows)

        attn = AttentionMetadata(
            slot_mapping=slot_parts[0] if len(slot_parts) == 1 else torch.cat(slot_parts),
            prefills=prefill_meta,
            num_prefill_tokens=num_prefill_tokens,
            decode_lens=lens,
            block_tables=tables,
            block_size=self.block_size,
        )
        input_ids = torch.tensor(token_ids, dtype=torch.int64)
        pos = torch.tensor(positions, dtype=torch.int64)
        hidden = self.model(input_ids, pos, attn, self.kv_caches)
        logits = None
        if logit_rows:
            if len(logit_rows) < len(token_ids) or logit_rows != list(range(len(token_ids))):
                hidden = hidden[torch.tensor(logit_rows)]
            logits = self.model.compute_logits(hidden)
        return StepLogits(logits, [per_request[id(s)] for s in sched.scheduled])
