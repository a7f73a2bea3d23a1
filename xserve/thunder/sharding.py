"""Which Thunder shard holds an author's posts.

A pure, process-independent function (Python's ``hash`` of an int is stable,
but sequential ids would land on shards round-robin by id; a multiplicative
mix spreads any id pattern evenly).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["shard_for", "shards_for"]

_MIX = 0x9E3779B97F4A7C15  # 2**64 / golden ratio (Fibonacci hashing)
_MASK = (1 << 64) - 1


def shard_for(author_id: int, num_shards: int) -> int:
    """The shard index in ``[0, num_shards)`` that owns ``author_id``'s posts."""
    if num_shards <= 1:
        return 0
    return (((author_id * _MIX) & _MASK) >> 32) % num_shards


def shards_for(author_ids: Iterable[int], num_shards: int) -> set[int]:
    """The shards holding any of ``author_ids`` (a fan-out touches only these)."""
    if num_shards <= 1:
        return {0}
    return {shard_for(a, num_shards) for a in author_ids}
