"""Fan-out merge == single-table exact search (property test), routing, filters."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from xserve.retrieval.merge import exact_top_k, filter_hits, merge_top_k, shard_quota, top_k
from xserve.sharding import shard_array, shard_for
from xserve.schema import ShardHits


def _corpus(n: int, dim: int, seed: int):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ids = rng.choice(np.arange(1, 10 * n + 1), n, replace=False).astype(np.int64)
    return v, ids, ids % 7 + 1, np.full(n, 5, np.int64)


@settings(max_examples=60)
@given(
    n=st.integers(1, 300),
    num_shards=st.integers(1, 6),
    k=st.integers(1, 80),
    seed=st.integers(0, 2**16),
    exclude_frac=st.floats(0, 0.5),
)
def test_merge_of_shard_top_k_equals_single_table_top_k(n, num_shards, k, seed, exclude_frac):
    v, ids, authors, created = _corpus(n, 8, seed)
    q = v[0] + 0.1
    q /= np.linalg.norm(q)
    exclude = set(ids[: int(n * exclude_frac)].tolist())
    owner = shard_array(ids, num_shards)
    parts = []
    for s in range(num_shards):
        m = owner == s
        # each shard answers its exact top-k without the excluded ids, as ShardSearcher does
        full = exact_top_k(v[m], ids[m], authors[m], created[m], q, int(m.sum()))
        parts.append(top_k(filter_hits(full, exclude), k))
    merged = merge_top_k(parts, k)
    keep = ~np.isin(ids, list(exclude)) if exclude else np.ones(n, bool)
    single = exact_top_k(v[keep], ids[keep], authors[keep], created[keep], q, k)
    np.testing.assert_array_equal(merged.post_ids, single.post_ids)
    np.testing.assert_array_equal(merged.author_ids, single.author_ids)
    np.testing.assert_allclose(merged.scores, single.scores, atol=1e-6)  # BLAS sums subsets in another order


def test_shard_quota_values():
    assert shard_quota(1000, 4, 6.0) == 333  # 250 + 6 · 13.7
    assert shard_quota(1000, 4, 0.0) == 1000 and shard_quota(1000, 1, 6.0) == 1000  # exact merge
    assert shard_quota(10, 2, 6.0) == 10  # never more than k


@settings(max_examples=40)
@given(n=st.integers(50, 3000), num_shards=st.integers(2, 6), k=st.integers(1, 300), seed=st.integers(0, 2**16),
       sigmas=st.floats(0.0, 8.0))
def test_quota_merge_is_exact_unless_a_shard_overflows(n, num_shards, k, seed, sigmas):
    """Shards returning their quota give the exact top-k whenever no shard holds more than its quota of it,
    and with the default 6 σ no shard ever does here (the binomial tail is < 1e-8)."""
    v, ids, authors, created = _corpus(n, 8, seed)
    q = v[1]
    quota = shard_quota(k, num_shards, sigmas)
    assert min(k, -(-k // num_shards)) <= quota <= k
    owner = shard_array(ids, num_shards)
    parts = [exact_top_k(v[owner == s], ids[owner == s], authors[owner == s], created[owner == s], q, quota)
             for s in range(num_shards)]
    truth = exact_top_k(v, ids, authors, created, q, k).post_ids
    overflow = np.bincount(shard_array(truth, num_shards), minlength=num_shards).max() > quota
    if not overflow:
        np.testing.assert_array_equal(merge_top_k(parts, k).post_ids, truth)
    if sigmas >= 6.0:
        assert not overflow


def test_merge_excludes_caller_ids_and_dedupes():
    a = ShardHits(np.array([1, 2, 3]), np.array([9, 9, 9]), np.zeros(3, np.int64), np.array([0.9, 0.8, 0.1], np.float32))
    b = ShardHits(np.array([2, 4]), np.array([9, 9]), np.zeros(2, np.int64), np.array([0.85, 0.5], np.float32))
    out = merge_top_k([a, b], 10, exclude_ids={1})
    assert out.post_ids.tolist() == [2, 4, 3]
    assert out.scores[0] == np.float32(0.85)


def test_ties_break_by_post_id():
    h = ShardHits(np.array([5, 3, 4]), np.ones(3, np.int64), np.zeros(3, np.int64), np.full(3, 0.5, np.float32))
    assert merge_top_k([h], 2).post_ids.tolist() == [3, 4]


def test_shard_of_is_stable_and_balanced():
    ids = np.arange(1, 40_001)
    owner = shard_array(ids, 4)
    assert owner.min() == 0 and owner.max() == 3
    assert np.bincount(owner).min() > 9_000
    assert shard_for(12345, 4) == shard_array(np.array([12345]), 4)[0]
