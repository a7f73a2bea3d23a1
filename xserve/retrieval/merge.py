"""Fan-out merge of per-shard top-k lists, and the exact top-k it must equal.

Order is by score descending, ties by post id ascending, so merged and
single-table results are comparable element by element.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

import numpy as np

from xserve.schema import RetrievedPost, ShardHits

__all__ = ["empty_hits", "exact_top_k", "filter_hits", "hits_to_posts", "merge_top_k", "shard_quota", "top_k"]


def empty_hits(version: str = "") -> ShardHits:
    z = np.zeros(0, dtype=np.int64)
    return ShardHits(z, z, z, np.zeros(0, dtype=np.float32), version, z)


def _replies(h: ShardHits) -> np.ndarray:
    return np.zeros(len(h), np.int64) if h.in_reply_to_post_ids is None else h.in_reply_to_post_ids


def _take(h: ShardHits, idx: np.ndarray) -> ShardHits:
    return ShardHits(h.post_ids[idx], h.author_ids[idx], h.created_at_ms[idx], h.scores[idx], h.version, _replies(h)[idx])


def top_k(h: ShardHits, k: int) -> ShardHits:
    """The best ``k`` of ``h`` (score desc, post id asc), sorted."""
    order = np.lexsort((h.post_ids, -h.scores.astype(np.float64)))[:k]
    return _take(h, order)


def filter_hits(h: ShardHits, exclude_ids: Collection[int] = (), min_created_at_ms: int | None = None) -> ShardHits:
    """Drop excluded ids and rows created before ``min_created_at_ms``; order kept."""
    keep = np.ones(len(h), dtype=bool)
    if exclude_ids:
        keep &= ~np.isin(h.post_ids, np.fromiter(exclude_ids, dtype=np.int64, count=len(exclude_ids)))
    if min_created_at_ms is not None:
        keep &= h.created_at_ms >= min_created_at_ms
    return h if keep.all() else _take(h, np.flatnonzero(keep))


def merge_top_k(parts: Sequence[ShardHits], k: int, exclude_ids: Collection[int] = ()) -> ShardHits:
    """Global top-``k`` of per-shard lists, without ``exclude_ids``.

    Contract: if each part is the exact top-k of a disjoint subset, the result
    equals the exact top-k of their union (property-tested against
    :func:`exact_top_k`). A post present in two parts (only transiently, during
    re-sharding) is kept once, with its best score.
    """
    parts = [p for p in parts if len(p)]
    if not parts:
        return empty_hits()
    cat = ShardHits(
        np.concatenate([p.post_ids for p in parts]),
        np.concatenate([p.author_ids for p in parts]),
        np.concatenate([p.created_at_ms for p in parts]),
        np.concatenate([p.scores for p in parts]),
        parts[0].version,
        np.concatenate([_replies(p) for p in parts]),
    )
    cat = top_k(filter_hits(cat, exclude_ids), len(cat))
    _, first = np.unique(cat.post_ids, return_index=True)  # best occurrence of each id (sorted input)
    if len(first) < len(cat):
        cat = _take(cat, np.sort(first))
    return _take(cat, np.arange(min(k, len(cat))))


def shard_quota(k: int, num_shards: int, sigmas: float) -> int:
    """How many hits each shard returns so that merging them gives the global top-``k``.

    Shards hold posts by a hash of the post id, independent of the vectors, so
    how many of the global top-k one shard holds is Binomial(k, 1/N): mean k/N,
    standard deviation sqrt(k/N · (1 - 1/N)). A shard returning mean + ``sigmas``
    deviations instead of k falls short only in that tail (6 σ at k = 1000 and
    N = 4: any shard short in 7e-9 of requests), and then the merge lacks a few
    of the weakest of the k hits. At k = 1000 and N = 4 a shard
    returns 333 instead of 1000 (each row LanceDB returns is a random read of
    its columns). ``sigmas <= 0`` gives k: the merge is then exact.
    """
    if sigmas <= 0 or num_shards <= 1:
        return k
    p = 1.0 / num_shards
    return min(k, math.ceil(k * p + sigmas * math.sqrt(k * p * (1.0 - p))))


def exact_top_k(
    vectors: np.ndarray,
    post_ids: np.ndarray,
    author_ids: np.ndarray,
    created_at_ms: np.ndarray,
    query: np.ndarray,
    k: int,
) -> ShardHits:
    """Brute-force top-``k`` by cosine over unit vectors (the oracle for every ANN path)."""
    scores = (np.asarray(vectors, dtype=np.float32) @ np.asarray(query, dtype=np.float32)).astype(np.float32)  # (N,)
    return top_k(ShardHits(np.asarray(post_ids), np.asarray(author_ids), np.asarray(created_at_ms), scores), k)


def hits_to_posts(h: ShardHits) -> list[RetrievedPost]:
    return [
        RetrievedPost(post_id=int(p), author_id=int(a), score=float(s), in_reply_to_post_id=int(r) or None)
        for p, a, s, r in zip(h.post_ids.tolist(), h.author_ids.tolist(), h.scores.tolist(), _replies(h).tolist())
    ]
