"""A minimal stand-in for the engine's model runner: lays out steps exactly as
`AttentionMetadata` describes, with each sequence's KV slots scattered across the cache
so that tests exercise the paging, not a contiguous special case."""

from __future__ import annotations

import torch

from tokenmill.model.layers.attention_metadata import AttentionMetadata, PrefillSeq


class PagedRunner:
    """Runs steps of prefill chunks and decodes against one KV cache."""

    def __init__(self, model, num_slots: int = 512, seed: int = 0) -> None:
        arch = model.arch
        dtype = model.norm.weight.dtype  # the activations' dtype (weights may be blocks)
        self.model = model
        self.kv_caches = [
            torch.zeros(2, num_slots, arch.num_kv_heads, arch.head_dim, dtype=dtype)
            for _ in range(arch.num_layers)
        ]
        gen = torch.Generator().manual_seed(seed)
        self.free = torch.randperm(num_slots, generator=gen).tolist()
        self.slots: dict[object, list[int]] = {}

    def _take(self, seq, n: int) -> list[int]:
        new = [self.free.pop() for _ in range(n)]
        self.slots.setdefault(seq, []).extend(new)
        return new

    @torch.inference_mode()
    def step(
        self,
        prefills: list[tuple[object, list[int]]],
        decodes: list[tuple[object, int]] = (),
        every_row: bool = False,
    ) -> torch.Tensor:
        """Returns (len(prefills) + len(decodes), vocab) float32 logits of each entry's
        last new token, or of every new token (T, vocab) when every_row."""
        tokens, positions, slot_mapping, seqs, last_rows = [], [], [], [], []
        for seq, ids in prefills:
            start = len(self.slots.get(seq, []))
            new = self._take(seq, len(ids))
            seqs.append(
                PrefillSeq(
                    query_start=len(tokens),
                    query_len=len(ids),
                    context_len=start + len(ids),
                    context_slots=torch.tensor(self.slots[seq]),
                )
            )
            tokens += ids
            positions += range(start, start + len(ids))
            slot_mapping += new
            last_rows.append(len(tokens) - 1)
        num_prefill = len(tokens)
        decode_ctx = []
        for seq, token in decodes:
            positions.append(len(self.slots[seq]))
            slot_mapping += self._take(seq, 1)
            tokens.append(token)
            decode_ctx.append(self.slots[seq])
            last_rows.append(len(tokens) - 1)
        decode_slots = decode_mask = None
        if decodes:
            width = max(len(c) for c in decode_ctx)
            decode_slots = torch.zeros(len(decodes), width, dtype=torch.int64)
            decode_mask = torch.zeros(len(decodes), 1, 1, width, dtype=torch.bool)
            for i, ctx in enumerate(decode_ctx):
                decode_slots[i, : len(ctx)] = torch.tensor(ctx)
                decode_mask[i, ..., : len(ctx)] = True
        attn = AttentionMetadata(
            slot_mapping=torch.tensor(slot_mapping),
            prefills=seqs,
            num_prefill_tokens=num_prefill,
            decode_slots=decode_slots,
            decode_mask=decode_mask,
        )
        hidden = self.model(torch.tensor(tokens), torch.tensor(positions), attn, self.kv_caches)
        return self.model.compute_logits(hidden if every_row else hidden[last_rows])

    def greedy(
        self, prompts: list[list[int]], max_new_tokens: int, eos: set[int]
    ) -> list[list[int]]:
        """Greedy continuations of all prompts together: one step prefilling them all,
        then batched decodes; a sequence leaves the batch after its EOS."""
        first = self.step([(i, p) for i, p in enumerate(prompts)]).argmax(-1).tolist()
        outs = [[t] for t in first]
        while True:
            live = [i for i, o in enumerate(outs) if len(o) < max_new_tokens and o[-1] not in eos]
            if not live:
                return outs
            nxt = self.step([], [(i, outs[i][-1]) for i in live]).argmax(-1).tolist()
            for i, t in zip(live, nxt):
                outs[i].append(t)
