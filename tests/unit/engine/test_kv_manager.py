from tokenmill.engine.kv_cache.manager import KVCacheManager

from .factories import make_request


def _compute_all(kv, req):
    """Pretend the model computed every known token."""
    req.num_computed_tokens = req.num_tokens
    kv.cache_full_blocks(req)


def test_allocation_exact_block_ids():
    kv = KVCacheManager(num_blocks=10, block_size=4)
    r = make_request(10)
    assert kv.allocate_slots(r, 10, kv.match_prefix(r))
    assert kv.block_ids(r) == [1, 2, 3]
    assert kv.pool.num_used == 3
    r.num_computed_tokens = 10
    r.output_token_ids.extend([50, 51])  # 12 tokens: still 3 blocks
    assert kv.allocate_slots(r, 2)
    assert kv.block_ids(r) == [1, 2, 3]
    r.num_computed_tokens = 12
    r.output_token_ids.append(52)
    assert kv.allocate_slots(r, 1)
    assert kv.block_ids(r) == [1, 2, 3, 4]


def test_allocation_failure_changes_nothing():
    kv = KVCacheManager(num_blocks=3, block_size=4)
    r = make_request(12)
    assert not kv.allocate_slots(r, 12, kv.match_prefix(r))
    assert kv.pool.num_free == 2 and kv.num_seqs == 0
    assert kv.prefix_queries == 0


def test_prefix_hit_shares_blocks_and_counts():
    kv = KVCacheManager(num_blocks=20, block_size=4)
    a = make_request(prompt=list(range(100, 114)))  # 14 tokens: 3 full blocks
    assert kv.allocate_slots(a, 14, kv.match_prefix(a))
    _compute_all(kv, a)
    b = make_request(prompt=list(range(100, 112)) + [7, 8, 9])  # shares 12 tokens
    m = kv.match_prefix(b)
    assert m.num_tokens == 12
    assert [blk.block_id for blk in m.blocks] == kv.block_ids(a)[:3]
    assert kv.allocate_slots(b, 3, m)
    assert kv.block_ids(b)[:3] == kv.block_ids(a)[:3]
    assert [blk.ref_cnt for blk in m.blocks] == [2, 2, 2]
    assert kv.prefix_hits == 12 and kv.prefix_queries == 14 + 15


def test_match_leaves_last_token_to_compute():
    kv = KVCacheManager(num_blocks=20, block_size=4)
    a = make_request(prompt=list(range(8)))
    kv.allocate_slots(a, 8, kv.match_prefix(a))
    _compute_all(kv, a)
    same = make_request(prompt=list(range(8)))
    assert kv.match_prefix(same).num_tokens == 4


def test_freed_prefix_is_reused_then_evicted_lru():
    kv = KVCacheManager(num_blocks=5, block_size=2)  # 4 usable blocks
    a = make_request(prompt=[1, 2, 3, 4, 5])
    kv.allocate_slots(a, 5, kv.match_prefix(a))
    assert kv.block_ids(a) == [1, 2, 3]
    _compute_all(kv, a)
    kv.free(a)
    # Freed tail first: free order is [4, 3, 2, 1].
    assert kv.pool.free_block_ids() == [4, 3, 2, 1]
    assert kv.pool.num_cached == 2
    b = make_request(prompt=[1, 2, 3, 4, 9])
    m = kv.match_prefix(b)
    assert [x.block_id for x in m.blocks] == [1, 2]
    kv.allocate_slots(b, 1, m)
    assert kv.block_ids(b) == [1, 2, 4]
    kv.free(b)
    c = make_request(prompt=[7, 7, 7, 7, 7, 7, 7])  # needs 4 blocks: evicts 1 and 2
    kv.allocate_slots(c, 7, kv.match_prefix(c))
    assert sorted(kv.block_ids(c)) == [1, 2, 3, 4]
    assert kv.match_prefix(b).num_tokens == 0


def test_collision_never_serves_wrong_block():
    kv = KVCacheManager(num_blocks=10, block_size=2, hash_fn=lambda parent, toks: 42)
    a = make_request(prompt=[1, 2, 3])
    kv.allocate_slots(a, 3, kv.match_prefix(a))
    _compute_all(kv, a)
    b = make_request(prompt=[5, 6, 7])  # same (constant) hash, different tokens
    assert kv.match_prefix(b).num_tokens == 0
    c = make_request(prompt=[1, 2, 9])
    assert kv.match_prefix(c).num_tokens == 2


def test_prompt_logprobs_requests_skip_the_cache():
    kv = KVCacheManager(num_blocks=10, block_size=2)
    a = make_request(prompt=[1, 2, 3])
    kv.allocate_slots(a, 3, kv.match_prefix(a))
    _compute_all(kv, a)
    b = make_request(prompt=[1, 2, 3], prompt_logprobs=1)
    assert kv.match_prefix(b).num_tokens == 0


def test_free_returns_everything():
    kv = KVCacheManager(num_blocks=10, block_size=4)
    reqs = [make_request(9) for _ in range(3)]
    for r in reqs:
        kv.allocate_slots(r, 9, kv.match_prefix(r))
    for r in reqs:
        kv.free(r)
    assert kv.pool.num_used == 0 and kv.num_seqs == 0
