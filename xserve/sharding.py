"""Which shard owns an id, the one definition: Thunder shards by author id, the user store by user id,
the post catalog and retrieval by post id.

``splitmix64`` (Steele et al. 2014) mixes the id, so sequential ids spread
evenly, then ``% num_shards``. Process-independent and the same on every
machine. The live path, the backfill and every reader must agree: changing it
(or a shard count) needs a backfill into a new embedding version and a new
data directory for the stores' logs. The Bloom filters of ``xserve.mixer.bloom``
use the same ``splitmix64``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import TypeVar

import numpy as np

__all__ = ["group_by_shard", "shard_array", "shard_for", "shards_for", "splitmix64", "splitmix64_array"]

T = TypeVar("T")

_MASK = (1 << 64) - 1
_GOLDEN, _MUL1, _MUL2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_SHIFTS = (30, 27, 31)


def splitmix64(x: int) -> int:
    """The splitmix64 finaliser of one unsigned 64-bit integer (``x`` is taken mod 2**64)."""
    z = (x + _GOLDEN) & _MASK
    z = ((z ^ (z >> _SHIFTS[0])) * _MUL1) & _MASK
    z = ((z ^ (z >> _SHIFTS[1])) * _MUL2) & _MASK
    return z ^ (z >> _SHIFTS[2])


def splitmix64_array(x: np.ndarray) -> np.ndarray:
    """``splitmix64`` elementwise on a uint64 array (int64 input is reinterpreted; arithmetic wraps)."""
    with np.errstate(over="ignore"):
        z = np.asarray(x).astype(np.uint64) + np.uint64(_GOLDEN)
        z = (z ^ (z >> np.uint64(_SHIFTS[0]))) * np.uint64(_MUL1)
        z = (z ^ (z >> np.uint64(_SHIFTS[1]))) * np.uint64(_MUL2)
        return z ^ (z >> np.uint64(_SHIFTS[2]))


def shard_for(key: int, num_shards: int) -> int:
    """The shard index in ``[0, num_shards)`` that owns ``key``."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    return splitmix64(key & _MASK) % num_shards


def shard_array(keys: np.ndarray | Iterable[int], num_shards: int) -> np.ndarray:
    """``shard_for`` over an int64 array: an int64 array of shard indices, shape of the input."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    return (splitmix64_array(np.asarray(keys, dtype=np.int64)) % np.uint64(num_shards)).astype(np.int64)


def shards_for(keys: Iterable[int], num_shards: int) -> set[int]:
    """The shards holding any of ``keys`` (a fan-out touches only these)."""
    if num_shards <= 1:
        return {0}
    return {shard_for(a, num_shards) for a in keys}


def group_by_shard(items: Iterable[T], num_shards: int, key: Callable[[T], int] = int) -> dict[int, list[T]]:
    """``items`` grouped by the shard owning ``key(item)``, in their order within each shard."""
    groups: dict[int, list[T]] = defaultdict(list)
    for item in items:
        groups[shard_for(key(item), num_shards)].append(item)
    return groups
