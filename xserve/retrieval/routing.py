"""Which shard owns a post: a hash of the post id, so sequential ids spread evenly.

The live path, the backfill and every reader must agree, so this is the only
definition. Changing it (or ``num_shards``) needs a backfill into a new version.
"""

from __future__ import annotations

import numpy as np

__all__ = ["shard_of", "splitmix64"]


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, elementwise on uint64 (a fast, well-mixed integer hash)."""
    with np.errstate(over="ignore"):
        z = np.asarray(x).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def shard_of(post_ids: np.ndarray | int, num_shards: int) -> np.ndarray:
    """Shard index in ``[0, num_shards)`` of each post id, shape of the input."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    return (splitmix64(np.asarray(post_ids, dtype=np.int64)) % np.uint64(num_shards)).astype(np.int64)
