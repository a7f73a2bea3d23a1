"""Which Ranker replica a viewer's rank request goes to: rendezvous hashing with a load-imbalance escape.

Pure (no Ray): :class:`~xserve.deployments.ranker_router.ViewerAffinityRouter`, the Serve request router of
the ``Ranker`` deployment, is a thin shell that hands this class the replicas and their queue lengths.

Each replica keeps the keys/values of the contexts it encoded in its own KV cache
(``kv_cache.py``), so a viewer's next page, refresh or grown history is cheap only on the replica
that served the viewer last. Rendezvous (highest-random-weight) hashing ranks the replicas for a
viewer by ``hash(viewer, replica)``: every router (one per ingress replica) agrees without talking
to the others, and adding or removing a replica moves only the viewers whose first choice it is,
not everyone (a modulo hash would move most of them). As in Serve's ``PrefixCacheAffinityRouter``,
affinity gives way to load: when the viewer's first choice holds more than ``max_imbalance``
requests above the least loaded replica, the next replica in the viewer's own order that is within
the bound goes first. That keeps the spill-over of a hot replica stable too (a viewer spills to the
same second choice each time, whose cache then holds its context).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

__all__ = ["ViewerAffinity", "rendezvous_order"]


def _weight(key: int, replica: str) -> int:
    # blake2b, not hash(): every process (every ingress's router) must rank replicas the same way
    return int.from_bytes(hashlib.blake2b(f"{key}:{replica}".encode(), digest_size=8).digest(), "big")


def rendezvous_order(key: int, replicas: Sequence[str]) -> list[str]:
    """``replicas`` ranked for ``key``, first choice first (ties, impossible in practice, by id)."""
    return sorted(replicas, key=lambda r: (-_weight(key, r), r))


class ViewerAffinity:
    """Ranks replicas for a routing key (the viewer id) given their loads (requests queued or running)."""

    def __init__(self, max_imbalance: int) -> None:
        if max_imbalance < 0:
            raise ValueError(f"max_imbalance must be >= 0, got {max_imbalance}")
        self.max_imbalance = max_imbalance

    def __repr__(self) -> str:
        return f"ViewerAffinity(max_imbalance={self.max_imbalance})"

    def choose(self, key: int, loads: Mapping[str, int | None]) -> list[str]:
        """Every replica of ``loads`` (replica id -> load, ``None`` = unknown, taken as 0), most preferred first:
        the key's rendezvous order, except that the first replica within ``max_imbalance`` of the least
        loaded one moves to the front."""
        order = rendezvous_order(key, list(loads))
        if not order:
            return []
        load = {r: loads[r] or 0 for r in order}
        bound = min(load.values()) + self.max_imbalance
        first = next(r for r in order if load[r] <= bound)  # the least loaded one always qualifies
        return [first] + [r for r in order if r != first]
