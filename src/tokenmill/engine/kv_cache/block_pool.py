"""A fixed pool of KV blocks with reference counts and a prefix-cache index.

Freed blocks that hold a cached prefix stay findable until their memory is needed:
the free queue is ordered least-recently-freed first, and a block handed out again
loses its cache entry at that moment (LRU reuse).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class KVBlock:
    """One block of `block_size` token slots in every layer's cache."""

    block_id: int
    ref_cnt: int = 0
    block_hash: int | None = None
    """Set once the block is full and registered in the prefix cache."""
    token_ids: tuple[int, ...] | None = None
    """The tokens the block holds, kept to re-check a hash hit."""


class BlockPool:
    """Owns every block. Block 0 is reserved as the null block: it is never handed out,
    so padded attention reads can point at it safely."""

    def __init__(self, num_blocks: int):
        if num_blocks < 2:
            raise ValueError("a block pool needs at least 2 blocks (one is the null block)")
        self.blocks = [KVBlock(i) for i in range(num_blocks)]
        # block_id -> block, oldest free first. Iteration order is the eviction order.
        self._free: OrderedDict[int, KVBlock] = OrderedDict(
            (b.block_id, b) for b in self.blocks[1:]
        )
        self._cached: dict[int, KVBlock] = {}
        self.num_evictions = 0

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free(self) -> int:
        """Blocks that can be handed out now (cached-but-unreferenced ones included)."""
        return len(self._free)

    @property
    def num_used(self) -> int:
        """Blocks referenced by at least one live sequence (the null block excluded)."""
        return self.num_blocks - 1 - len(self._free)

    def free_block_ids(self) -> list[int]:
        """Free blocks in eviction order (first is reused first)."""
        return list(self._free)

    def allocate(self, n: int) -> list[KVBlock]:
        """Take `n` blocks from the front of the free queue, evicting their cache
        entries. Raises MemoryError if fewer than `n` are free (nothing is taken)."""
        if n > len(self._free):
            raise MemoryError(f"asked for {n} KV blocks, {len(self._free)} free")
        out = []
        for _ in range(n):
            _, block = self._free.popitem(last=False)
            if block.block_hash is not None:
                self._evict(block)
            block.ref_cnt = 1
            out.append(block)
        return out

    def touch(self, blocks: list[KVBlock]) -> None:
        """Take a reference on prefix-cache hits, pulling unreferenced ones out of the
        free queue."""
        for block in blocks:
            if block.ref_cnt == 0:
                del self._free[block.block_id]
            block.ref_cnt += 1

    def free(self, blocks: list[KVBlock]) -> None:
        """Drop one reference on each block. Blocks reaching zero join the free queue's
        tail in the given order, so callers pass a sequence's blocks tail-first to
        have its last blocks reused before its shared prefix."""
        for block in blocks:
            block.ref_cnt -= 1
            if block.ref_cnt < 0:
                raise RuntimeError(f"block {block.block_id} freed more often than taken")
            if block.ref_cnt == 0:
                self._free[block.block_id] = block

    def lookup(self, block_hash: int, token_ids: tuple[int, ...]) -> KVBlock | None:
        """The cached block for this hash, if it holds exactly `token_ids` (a hash
        collision must never serve another prefix's KV)."""
        block = self._cached.get(block_hash)
        if block is None or block.token_ids != token_ids:
            return None
        return block

    def cache(self, block: KVBlock, block_hash: int, token_ids: tuple[int, ...]) -> None:
        """Register a full block under its chained hash. A hash already mapped keeps
        its first block (the duplicate just stays unindexed)."""
        if block.block_hash is not None or block_hash in self._cached:
            return
        block.block_hash = block_hash
        block.token_ids = token_ids
        self._cached[block_hash] = block

    def _evict(self, block: KVBlock) -> None:
        if self._cached.get(block.block_hash) is block:
            del self._cached[block.block_hash]
        block.block_hash = None
        block.token_ids = None
        self.num_evictions += 1

    @property
    def num_cached(self) -> int:
        return len(self._cached)
