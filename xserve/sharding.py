"""Which shard owns an id: Thunder shards by author id, the user store by user id, the post catalog by post id.

A pure, process-independent function (Python's ``hash`` of an int is stable,
but sequential ids would land on shards round-robin by id; a multiplicative
mix spreads any id pattern evenly).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import TypeVar

import numpy as np

__all__ = ["group_by_shard", "shard_array", "shard_for", "shards_for"]

T = TypeVar("T")

_MIX = 0x9E3779B97F4A7C15  # 2**64 / golden ratio (Fibonacci hashing)
_MASK = (1 << 64) - 1


def shard_for(key: int, num_shards: int) -> int:
    """The shard index in ``[0, num_shards)`` that owns ``key``."""
    if num_shards <= 1:
        return 0
    return (((key * _MIX) & _MASK) >> 32) % num_shards


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


def shard_array(keys: np.ndarray, num_shards: int) -> np.ndarray:
    """``shard_for`` over an int64 array (uint64 arithmetic wraps like the mask)."""
    if num_shards <= 1:
        return np.zeros(len(keys), dtype=np.int64)
    mixed = (keys.astype(np.uint64) * np.uint64(_MIX)) >> np.uint64(32)
    return (mixed % np.uint64(num_shards)).astype(np.int64)
