import pytest

from tokenmill.engine.kv_cache.block_pool import BlockPool


def test_null_block_is_never_handed_out():
    pool = BlockPool(4)
    blocks = pool.allocate(3)
    assert [b.block_id for b in blocks] == [1, 2, 3]
    assert pool.num_free == 0
    with pytest.raises(MemoryError):
        pool.allocate(1)


def test_allocate_too_many_takes_nothing():
    pool = BlockPool(4)
    with pytest.raises(MemoryError):
        pool.allocate(4)
    assert pool.num_free == 3


def test_ref_counts_and_free_order():
    pool = BlockPool(5)
    a, b, c = pool.allocate(3)
    assert (a.ref_cnt, b.ref_cnt, c.ref_cnt) == (1, 1, 1)
    pool.touch([a])
    assert a.ref_cnt == 2
    pool.free([c, b, a])
    assert (a.ref_cnt, b.ref_cnt, c.ref_cnt) == (1, 0, 0)
    # Block 4 was never used; c then b were freed in that order.
    assert pool.free_block_ids() == [4, c.block_id, b.block_id]
    pool.free([a])
    assert pool.free_block_ids() == [4, c.block_id, b.block_id, a.block_id]
    with pytest.raises(RuntimeError):
        pool.free([a])


def test_cached_block_survives_free_until_reused_lru():
    pool = BlockPool(4)
    a, b = pool.allocate(2)
    pool.cache(a, 111, (1, 2))
    pool.cache(b, 222, (3, 4))
    pool.free([a])
    pool.free([b])
    # Still findable while free.
    assert pool.lookup(111, (1, 2)) is a
    assert pool.num_cached == 2
    # Free order is [3 (never used), a, b]: reuse takes 3, then a (evicting it), b stays.
    taken = pool.allocate(2)
    assert [t.block_id for t in taken] == [3, a.block_id]
    assert pool.lookup(111, (1, 2)) is None
    assert a.block_hash is None and a.token_ids is None
    assert pool.lookup(222, (3, 4)) is b
    assert pool.num_evictions == 1


def test_touch_revives_a_free_cached_block():
    pool = BlockPool(3)
    (a,) = pool.allocate(1)
    pool.cache(a, 7, (9,))
    pool.free([a])
    assert pool.num_free == 2
    pool.touch([a])
    assert a.ref_cnt == 1 and pool.num_free == 1
    assert pool.free_block_ids() == [2]


def test_hash_collision_is_rechecked_by_tokens():
    pool = BlockPool(3)
    (a,) = pool.allocate(1)
    pool.cache(a, 5, (1, 2, 3))
    assert pool.lookup(5, (1, 2, 3)) is a
    assert pool.lookup(5, (1, 2, 4)) is None
