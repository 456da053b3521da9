"""Maps sequences to KV blocks: allocation, prefix-cache matching, freeing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tokenmill.engine.kv_cache.block_pool import BlockPool, KVBlock
from tokenmill.engine.request import Request

HashFn = Callable[[int | None, tuple[int, ...]], int]


def chained_block_hash(parent: int | None, token_ids: tuple[int, ...]) -> int:
    """Hash of a full block given its parent's hash: equal hashes mean (up to
    collisions, which lookups re-check) equal whole prefixes, not only equal blocks."""
    return hash((parent, token_ids))


@dataclass
class PrefixMatch:
    """Blocks already holding a prompt's leading tokens."""

    blocks: list[KVBlock] = field(default_factory=list)
    num_tokens: int = 0


@dataclass
class _SeqBlocks:
    blocks: list[KVBlock] = field(default_factory=list)
    num_hashed: int = 0
    last_hash: int | None = None


class KVCacheManager:
    """Owns each running sequence's block list on top of a BlockPool.

    Counters (`prefix_queries`, `prefix_hits`, in tokens) let tests and metrics see
    how much prompt work the prefix cache saved.
    """

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        enable_prefix_caching: bool = True,
        hash_fn: HashFn = chained_block_hash,
    ):
        self.pool = BlockPool(num_blocks)
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.hash_fn = hash_fn
        self._seqs: dict[str, _SeqBlocks] = {}
        self.prefix_queries = 0
        self.prefix_hits = 0

    def match_prefix(self, request: Request) -> PrefixMatch:
        """Longest run of cached full blocks at the start of the request's tokens.
        Does not take references. At least one token is always left to compute, so
        the model produces logits for the last position."""
        if not self.enable_prefix_caching or request.wants_prompt_logprobs:
            return PrefixMatch()
        max_blocks = (request.num_tokens - 1) // self.block_size
        match = PrefixMatch()
        parent = None
        for i in range(max_blocks):
            start = i * self.block_size
            tokens = tuple(request.token_ids_slice(start, start + self.block_size))
            parent = self.hash_fn(parent, tokens)
            block = self.pool.lookup(parent, tokens)
            if block is None:
                break
            match.blocks.append(block)
        match.num_tokens = len(match.blocks) * self.block_size
        return match

    def allocate_slots(
        self, request: Request, num_new_tokens: int, prefix: PrefixMatch | None = None
    ) -> bool:
        """Make room for `num_new_tokens` past the computed ones (after the prefix hit,
        for a newly admitted request). Returns False and changes nothing when the pool
        cannot supply the blocks."""
        seq = self._seqs.get(request.request_id)
        if seq is None:
            seq = _SeqBlocks()
        hit_blocks = prefix.blocks if prefix else []
        # Hits with no other reference sit in the free queue; taking them uses it up.
        hits_from_free = sum(1 for b in hit_blocks if b.ref_cnt == 0)
        computed = len(hit_blocks) * self.block_size if prefix else request.num_computed_tokens
        total = computed + num_new_tokens
        need = max(0, -(-total // self.block_size) - len(seq.blocks) - len(hit_blocks))
        if need + hits_from_free > self.pool.num_free:
            return False
        if prefix is not None:
            self.prefix_queries += request.num_tokens
            self.prefix_hits += prefix.num_tokens
            self.pool.touch(hit_blocks)
            seq.blocks.extend(hit_blocks)
            seq.num_hashed = len(hit_blocks)
            seq.last_hash = hit_blocks[-1].block_hash if hit_blocks else None
        seq.blocks.extend(self.pool.allocate(need))
        self._seqs[request.request_id] = seq
        return True

    def cache_full_blocks(self, request: Request) -> None:
        """Register the request's blocks that became full of computed tokens."""
        if not self.enable_prefix_caching:
            return
        seq = self._seqs[request.request_id]
        num_full = min(request.num_computed_tokens, request.num_tokens) // self.block_size
        while seq.num_hashed < num_full:
            i = seq.num_hashed
            start = i * self.block_size
            tokens = tuple(request.token_ids_slice(start, start + self.block_size))
            seq.last_hash = self.hash_fn(seq.last_hash, tokens)
            self.pool.cache(seq.blocks[i], seq.last_hash, tokens)
            seq.num_hashed += 1

    def truncate(self, request: Request, num_tokens: int) -> None:
        """Free the request's blocks past those holding its first `num_tokens` positions,
        tail first. Registered (hashed) blocks hold only verified tokens, so a rollback
        of unverified positions never drops one; this checks it."""
        seq = self._seqs.get(request.request_id)
        if seq is None:
            return
        keep = -(-num_tokens // self.block_size)
        if keep < seq.num_hashed:
            raise RuntimeError("truncate would drop a block registered in the prefix cache")
        if len(seq.blocks) > keep:
            self.pool.free(list(reversed(seq.blocks[keep:])))
            del seq.blocks[keep:]

    def fork(self, source: Request, child: Request) -> tuple[int, int] | None:
        """Give `child` (a new sequence with the same computed tokens as `source`) the
        source's KV: its full blocks shared by reference (copy-on-write: a full block is
        never written again), its partly filled last block copied into a fresh block,
        since both sequences will write their next tokens there. Returns the
        (source block id, new block id) whose contents the caller must copy in the KV
        tensors, or None when no copy is needed. Takes one block at most; raises
        MemoryError (and changes nothing) when none is free."""
        seq = self._seqs[source.request_id]
        num_full = source.num_computed_tokens // self.block_size
        partial = source.num_computed_tokens % self.block_size != 0
        if partial and self.pool.num_free < 1:
            raise MemoryError("no KV block free for a beam's partly filled last block")
        shared = seq.blocks[:num_full]
        self.pool.touch(shared)
        forked = _SeqBlocks(list(shared), min(seq.num_hashed, num_full), seq.last_hash)
        copy = None
        if partial:
            (block,) = self.pool.allocate(1)
            forked.blocks.append(block)
            copy = (seq.blocks[num_full].block_id, block.block_id)
        self._seqs[child.request_id] = forked
        return copy

    def holds(self, request: Request) -> bool:
        """Whether the request has a block table (it is running)."""
        return request.request_id in self._seqs

    def free(self, request: Request) -> None:
        """Release every block of the request, tail first (see BlockPool.free)."""
        seq = self._seqs.pop(request.request_id, None)
        if seq is not None:
            self.pool.free(list(reversed(seq.blocks)))

    def block_ids(self, request: Request) -> list[int]:
        """The request's block table."""
        return [b.block_id for b in self._seqs[request.request_id].blocks]

    @property
    def num_seqs(self) -> int:
        return len(self._seqs)
