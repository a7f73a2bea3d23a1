"""KV-cache bookkeeping: prefix reuse, reference counts, LRU eviction, budget, stats (no torch)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xserve.phoenix.serving.kv_cache import (
    BlockPool,
    CacheFullError,
    KVCacheManager,
    block_bytes,
    num_blocks_for_budget,
)
from xserve.schema import Action, Engagement
from xserve.users.history import EngagementSequence


def ctx(user: int, n_history: int, start: int = 0) -> list[tuple]:
    """A context's token keys: the user then ``n_history`` history items."""
    return [("user", user)] + [("post", user, i) for i in range(start, start + n_history)]


def encode(mgr: KVCacheManager, keys):
    """What the runner does: allocate, (write the blocks), commit, keep it pinned."""
    alloc = mgr.allocate(keys)
    mgr.commit(alloc)
    return alloc


def is_cached(mgr: KVCacheManager, keys) -> bool:
    return all(mgr.pool.lookup(h) is not None for h in mgr.block_hashes(keys))


def test_same_context_is_a_full_hit_and_shares_blocks():
    mgr = KVCacheManager(num_blocks=16, block_size=4)
    a = encode(mgr, ctx(1, 9))  # 10 tokens -> 3 blocks, the last partial
    assert (a.num_tokens, a.num_cached_tokens, a.first_new_block) == (10, 0, 0)
    mgr.release(a)
    b = encode(mgr, ctx(1, 9))
    assert b.is_hit and b.block_ids == a.block_ids and b.first_new_block == 3
    s = mgr.stats
    assert (s.queries, s.hits, s.misses, s.hit_tokens, s.computed_tokens) == (2, 1, 1, 10, 10)
    assert s.hit_rate == 0.5


def test_history_grown_at_the_end_reuses_full_prefix_blocks():
    mgr = KVCacheManager(num_blocks=16, block_size=4)
    a = encode(mgr, ctx(1, 9))  # blocks [u h0 h1 h2] [h3 h4 h5 h6] [h7 h8]
    mgr.release(a)
    b = encode(mgr, ctx(1, 13))  # two full blocks unchanged, the partial one now differs
    assert b.block_ids[:2] == a.block_ids[:2]
    assert b.num_cached_tokens == 8 and b.first_new_block == 2 and len(b.block_ids) == 4
    assert mgr.stats.partial_hits == 1
    # A different user never matches, even with identical history keys.
    c = mgr.allocate([("user", 2)] + ctx(1, 9)[1:])
    assert c.num_cached_tokens == 0
    # A history that changed at the front (window slid) cannot reuse anything.
    d = mgr.allocate(ctx(1, 9, start=1))
    assert d.num_cached_tokens == 0


def test_different_model_seed_never_shares():
    a, b = KVCacheManager(8, 4, seed="v1"), KVCacheManager(8, 4, seed="v2")
    assert a.block_hashes(ctx(1, 5)) != b.block_hashes(ctx(1, 5))


def test_uncommitted_blocks_are_not_found():
    mgr = KVCacheManager(num_blocks=8, block_size=4)
    a = mgr.allocate(ctx(1, 3))
    assert mgr.allocate(ctx(1, 3)).num_cached_tokens == 0  # not written yet
    mgr.release(a)  # released without commit: back to empty blocks, nothing cached
    assert not mgr.pool.cached


def test_block_in_use_is_never_evicted():
    mgr = KVCacheManager(num_blocks=4, block_size=4)
    pinned = encode(mgr, ctx(1, 7))  # 2 blocks, kept pinned
    free = encode(mgr, ctx(2, 7))  # 2 blocks
    mgr.release(free)
    third = encode(mgr, ctx(3, 7))  # must evict user 2, never user 1
    assert set(third.block_ids) == set(free.block_ids)
    assert mgr.stats.evictions == 2
    assert mgr.allocate(ctx(1, 7)).is_hit
    with pytest.raises(CacheFullError, match="only 0 of 4"):
        mgr.allocate(ctx(4, 3))


def test_cache_full_pins_nothing():
    mgr = KVCacheManager(num_blocks=3, block_size=4)
    a = encode(mgr, ctx(1, 7))
    mgr.release(a)
    before = list(mgr.pool.ref_cnt)
    with pytest.raises(CacheFullError):
        mgr.allocate(ctx(1, 15))  # hits 2 blocks but needs 2 more, only 1 free
    assert mgr.pool.ref_cnt == before and mgr.pool.num_free == 3


def test_lru_evicts_least_recently_released_and_empty_blocks_first():
    mgr = KVCacheManager(num_blocks=6, block_size=4)
    allocs = {u: encode(mgr, ctx(u, 3)) for u in (1, 2, 3)}  # one block each, 3 still empty
    for u in (2, 1, 3):  # release order = LRU order: 2 is the oldest
        mgr.release(allocs[u])
    for u in (4, 5, 6):  # the three empty blocks go first: nothing evicted
        mgr.release(encode(mgr, ctx(u, 3)))
    assert mgr.stats.evictions == 0
    mgr.release(encode(mgr, ctx(7, 3)))
    assert mgr.stats.evictions == 1
    assert not is_cached(mgr, ctx(2, 3)) and is_cached(mgr, ctx(1, 3))


def test_hit_refreshes_lru_position():
    mgr = KVCacheManager(num_blocks=2, block_size=4)
    a, b = encode(mgr, ctx(1, 3)), encode(mgr, ctx(2, 3))
    mgr.release(a)
    mgr.release(b)
    mgr.release(encode(mgr, ctx(1, 3)))  # user 1 used again: now the most recent
    mgr.release(encode(mgr, ctx(3, 3)))  # evicts user 2
    assert is_cached(mgr, ctx(1, 3)) and not is_cached(mgr, ctx(2, 3))


def test_tail_of_a_context_is_evicted_before_its_prefix():
    mgr = KVCacheManager(num_blocks=3, block_size=4)
    mgr.release(encode(mgr, ctx(1, 11)))  # 3 blocks, released tail first
    mgr.release(encode(mgr, ctx(2, 3)))  # evicts the tail block of user 1
    assert mgr.allocate(ctx(1, 11)).num_cached_tokens == 8


def test_refcounts_and_double_release():
    pool = BlockPool(2)
    (b,) = pool.take(1)
    pool.touch(b)
    pool.release(b)
    assert pool.ref_cnt[b] == 1 and pool.num_free == 1
    pool.release(b)
    with pytest.raises(ValueError, match="released more often"):
        pool.release(b)
    mgr = KVCacheManager(2, 4)
    a = encode(mgr, ctx(1, 2))
    mgr.release(a)
    mgr.release(a)  # idempotent per allocation
    assert mgr.pool.num_free == 2
    with pytest.raises(ValueError, match="commit after release"):
        mgr.commit(a)


def test_budget_to_blocks():
    per_block = block_bytes(num_layers=4, num_kv_heads=2, head_dim=32, block_size=16, dtype_bytes=4)
    assert per_block == 4 * 2 * 2 * 16 * 32 * 4
    assert num_blocks_for_budget(10 * per_block + per_block - 1, per_block) == 10
    with pytest.raises(ValueError, match="holds no block"):
        num_blocks_for_budget(per_block - 1, per_block)


def test_clear_refuses_while_pinned():
    mgr = KVCacheManager(4, 4)
    a = encode(mgr, ctx(1, 3))
    with pytest.raises(RuntimeError, match="in use"):
        mgr.clear()
    mgr.release(a)
    mgr.clear()
    assert not mgr.allocate(ctx(1, 3)).is_hit


@settings(max_examples=60)
@given(st.lists(st.tuples(st.integers(1, 5), st.integers(0, 20), st.booleans()), min_size=1, max_size=40))
def test_invariants_under_random_traffic(ops):
    """Pinned blocks are never handed out twice; cached hashes point at their block; budget holds."""
    mgr = KVCacheManager(num_blocks=8, block_size=4)
    live = []
    for user, n, keep in ops:
        try:
            alloc = encode(mgr, ctx(user, n))
        except CacheFullError:
            assert mgr.pool.num_free < mgr.num_blocks_for(n + 1)
            continue
        live.append(alloc)
        if not keep:
            mgr.release(live.pop(0))
        pinned = [b for a in live for b in a.block_ids]
        counts = {b: pinned.count(b) for b in pinned}
        assert all(mgr.pool.ref_cnt[b] == c for b, c in counts.items())
        assert sum(1 for r in mgr.pool.ref_cnt if r) + mgr.pool.num_free == 8
        for h, b in mgr.pool.cached.items():
            assert mgr.pool.block_hash[b] == h
        for a in live:  # every block of a live context still holds that context
            assert [mgr.pool.block_hash[b] for b in a.block_ids] == a.block_hashes


def _session_reuse(trim_block: int, history_len: int = 32, steps: int = 120, block_size: int = 4):
    """A viewer who engages once, then reads a page and refreshes it, ``steps`` times; the context is the feed's
    window (``EngagementSequence.window``). Returns the cache stats and how often the window's first entry moved."""
    seq = EngagementSequence(capacity=256, window_ms=1)
    mgr = KVCacheManager(num_blocks=64, block_size=block_size)
    moves, first = 0, None
    for t in range(1, steps + 1):
        seq.add(Engagement(1, t, 100 + t, Action.FAVORITE, t * 10))
        window = seq.window(history_len, trim_block)
        moves += first is not None and window[0].post_id != first
        first = window[0].post_id
        for _ in range(2):  # the page, then a refresh with nothing new
            mgr.release(encode(mgr, [("user", 1)] + [(i.post_id, i.author_id) for i in window]))
    return mgr.stats, moves


def test_a_block_trimmed_window_reuses_the_context_until_each_trim():
    """Between two trims a context only grows at its end: the page after an engagement is a partial hit (its
    full blocks cached), the refresh a full hit; a trim re-encodes it once per block of new entries. The window
    that slides by one entry is re-encoded on every engagement once the history is full."""
    stats, moves = _session_reuse(trim_block=8)
    assert moves == -(-(120 - 32) // 8)  # one trim per 8 entries past history_len
    assert stats.hits == 120  # every refresh
    # a page misses after a trim, or while the context is shorter than one block (nothing full to reuse)
    assert stats.misses == moves + 3 and stats.partial_hits == 120 - moves - 3
    assert (stats.hits + stats.partial_hits) / stats.queries > 0.9  # 226 of 240
    sliding, moved = _session_reuse(trim_block=1)
    assert moved == 120 - 32 and sliding.misses == moved + 3  # every page once the history is full
