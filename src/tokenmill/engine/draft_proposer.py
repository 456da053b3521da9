"""Draft-model speculation: a second, smaller model with the target's vocabulary guesses
the next tokens greedily; the target verifies them in one pass.

The draft is deterministic (argmax), so the verifier's rule for q = one-hot(d) stays exact:
greedy output is identical and sampled tokens keep the target's distribution.

KV: each speculating sequence gets its own contiguous draft cache (one tensor per layer,
shape (2, capacity, kv_heads, head_dim), slot = position), grown by doubling. Simpler than
a second paged pool, and cheap for a small draft; the price is that the draft runs one
forward pass per sequence (not batched across sequences). The caches sit outside the
target's KV budget but are bounded by it: only running sequences, which hold target KV
for their tokens, keep one, at most twice their length. The cache remembers which
tokens its positions hold, so rolling back rejected drafts is lazy: at the next proposal
it keeps the longest prefix shared with the sequence's text and recomputes from there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokenmill.config import SpeculativeConfig
from tokenmill.errors import ConfigError, ModelNotFoundError
from tokenmill.model.layers.attention_metadata import AttentionMetadata, PrefillSeq
from tokenmill.model.loader import LoadedModel, load_model

MIN_CAPACITY = 128
VOCAB_SAMPLE = 64
"""Token ids whose strings the mismatch message shows at most (the check compares all)."""


def check_same_vocabulary(target: LoadedModel, draft: LoadedModel) -> None:
    """Raise ConfigError unless `draft` tokenizes exactly as `target` does: the same
    token -> id map (added tokens included) and the same EOS. Mutates nothing."""
    tv = target.tokenizer.backend.get_vocab(with_added_tokens=True)
    dv = draft.tokenizer.backend.get_vocab(with_added_tokens=True)
    problem = None
    if len(tv) != len(dv):
        problem = f"vocabulary sizes differ ({len(dv)} tokens in the draft, {len(tv)})"
    elif tv != dv:
        differ = sorted(t for t in tv if dv.get(t) != tv[t])[:3]
        problem = f"token ids differ (e.g. {', '.join(repr(t) for t in differ)})"
    elif target.tokenizer.eos_token_id != draft.tokenizer.eos_token_id:
        problem = "their end-of-sequence tokens differ"
    if problem is not None:
        raise ConfigError(
            f"speculative=draft:{draft.name}: the draft model's tokenizer does not match the "
            f"target {target.name!r}: {problem}. A draft must share the target's vocabulary "
            "(e.g. a smaller, quantized or distilled version of the same model family).",
            setting="speculative",
        )


@dataclass
class DraftCache:
    """One sequence's draft KV: positions [0, len(tokens)) hold these tokens' K/V."""

    kv: list[torch.Tensor]
    """Per layer (2, capacity, kv_heads, head_dim)."""
    tokens: list[int]

    @property
    def capacity(self) -> int:
        return int(self.kv[0].shape[1])


class DraftProposer:
    """Runs the draft model to propose each decoding sequence's next tokens. Owns one
    DraftCache per sequence it proposed for, keyed by request id."""

    def __init__(
        self,
        config: SpeculativeConfig,
        draft: LoadedModel,
        max_model_len: int,
        vocab_size: int,
    ):
        """max_model_len: the target's context length; vocab_size: the target's logits
        width (a draft token beyond it is never proposed)."""
        self.config = config
        self.draft = draft
        self.max_len = min(max_model_len, draft.max_model_len)
        self.vocab_size = vocab_size
        arch = draft.arch
        self.kv_shape = (arch.num_kv_heads, arch.head_dim)
        self.num_layers = arch.num_layers
        self.kv_dtype = torch.bfloat16 if draft.quantization == "int8" else draft.dtype
        self.caches: dict[str, DraftCache] = {}

    def propose(self, key: str, tokens: list[int], num_output: int, max_tokens: int) -> list[int]:
        """Up to config.num_tokens greedy draft tokens after `tokens` (prompt + output,
        the last one not yet computed by the target) for sequence `key`. Drafts never
        reach past max_tokens or either model's context length. Mutates the sequence's
        DraftCache (created on first use): catches up on the tokens it has not seen and
        writes the K/V of every draft but the last."""
        room = min(
            self.config.num_tokens,
            max_tokens - num_output - 1,
            self.max_len - len(tokens),
        )
        if room <= 0:
            return []
        cache = self._cache_for(key, len(tokens) + room)
        # Keep the longest prefix this cache shares with the text, but recompute at least
        # the last token: its logits row gives the first draft.
        keep = 0
        limit = min(len(cache.tokens), len(tokens) - 1)
        while keep < limit and cache.tokens[keep] == tokens[keep]:
            keep += 1
        del cache.tokens[keep:]
        drafts: list[int] = []
        feed = tokens[keep:]
        while True:
            token = self._forward(cache, feed)
            drafts.append(token)
            if len(drafts) == room:
                return drafts
            feed = [token]

    def release(self, key: str) -> None:
        """Free sequence `key`'s draft cache (finished, aborted, preempted, auto-off).
        Unknown keys are ignored."""
        self.caches.pop(key, None)

    def retain(self, keys: set[str]) -> None:
        """Free every draft cache whose sequence is not in `keys`."""
        for key in [k for k in self.caches if k not in keys]:
            del self.caches[key]

    def _cache_for(self, key: str, length: int) -> DraftCache:
        """The sequence's cache, created or grown (by doubling) to hold `length` positions."""
        cache = self.caches.get(key)
        if cache is not None and cache.capacity >= length:
            return cache
        capacity = max(MIN_CAPACITY, cache.capacity if cache else 0)
        while capacity < length:
            capacity *= 2
        shape = (2, capacity, *self.kv_shape)
        kv = [torch.zeros(shape, dtype=self.kv_dtype) for _ in range(self.num_layers)]
        if cache is None:
            cache = DraftCache(kv, [])
        else:
            n = len(cache.tokens)
            for new, old in zip(kv, cache.kv, strict=True):
                new[:, :n] = old[:, :n]
            cache.kv = kv
        self.caches[key] = cache
        return cache

    @torch.inference_mode()
    def _forward(self, cache: DraftCache, feed: list[int]) -> int:
        """Run the draft over `feed` at the positions after cache.tokens (one prefill
        chunk through the draft cache); append them to cache.tokens and return the argmax
        after the last one."""
        start = len(cache.tokens)
        end = start + len(feed)
        slots = torch.arange(end, dtype=torch.int64)
        if len(feed) == 1:
            # The decode path (the native kernel where built): the whole cache is one
            # block of `capacity` slots, so a position is its slot.
            attn = AttentionMetadata(
                slot_mapping=slots[start:],
                prefills=[],
                num_prefill_tokens=0,
                decode_lens=torch.tensor([end], dtype=torch.int64),
                block_tables=torch.zeros((1, 1), dtype=torch.int64),
                block_size=cache.capacity,
            )
        else:
            attn = AttentionMetadata(
                slot_mapping=slots[start:],
                prefills=[PrefillSeq(0, len(feed), end, slots)],
                num_prefill_tokens=len(feed),
            )
        model = self.draft.model
        ids = torch.tensor(feed, dtype=torch.int64)
        hidden = model(ids, slots[start:], attn, cache.kv)  # (len(feed), hidden)
        logits = model.compute_logits(hidden[-1:])  # (1, V_draft)
        cache.tokens.extend(feed)
        return int(logits[0, : self.vocab_size].argmax())


def load_draft_proposer(
    config: SpeculativeConfig, target: LoadedModel, max_model_len: int
) -> DraftProposer | None:
    """In draft:MODEL mode, load the draft (as --model would, dtype auto, with the
    target's batch_invariant: the kernel choice is process-wide) and refuse one
    that cannot be loaded or whose vocabulary differs from the target's (ConfigError
    naming the speculative setting); None in the other modes."""
    name = config.draft_model
    if name is None:
        return None
    try:
        draft = load_model(name, batch_invariant=target.batch_invariant)
    except (ModelNotFoundError, ConfigError) as exc:
        raise ConfigError(
            f"speculative=draft:{name}: the draft model cannot be loaded: {exc}",
            setting="speculative",
        ) from exc
    check_same_vocabulary(target, draft)
    return DraftProposer(config, draft, max_model_len, target.arch.vocab_size)
