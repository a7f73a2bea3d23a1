"""The engagement sequence: a user's latest actions, aggregated per post and time window.

Follows the reference ``UserActionSeqQueryHydrator`` (``docs/reference.md`` §2.3): raw
actions are aggregated so that every action on one post within one window of
``window_ms`` (reference ``UAS_WINDOW_TIME_MS``, 5 min) becomes one
``HistoryItem`` carrying the set of actions, and only the latest entries are
kept. Windows are fixed buckets (``timestamp_ms // window_ms``), so the result
does not depend on the order engagements arrive in, and applying one
engagement twice equals applying it once (actions are a set; the item's time
and dwell are maxima).

Bounded: at most ``capacity`` items. When full, the oldest item is evicted and
the sequence remembers the evicted time; later-arriving engagements at or
before it are dropped (they would be evicted again anyway).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from xserve.schema import Action, Engagement, HistoryItem, ProductSurface

__all__ = ["EngagementSequence"]


@dataclass(slots=True)
class _Entry:
    post_id: int
    author_id: int
    actions: set[Action]
    timestamp_ms: int  # latest action in the window
    product_surface: ProductSurface
    dwell_ms: int

    def sort_key(self) -> tuple[int, int]:
        return (self.timestamp_ms, self.post_id)

    def freeze(self) -> HistoryItem:
        return HistoryItem(
            self.post_id, self.author_id, frozenset(self.actions), self.timestamp_ms, self.product_surface, self.dwell_ms
        )


class EngagementSequence:
    """One user's aggregated engagement sequence, newest last (see the module docstring)."""

    __slots__ = ("_by_key", "_capacity", "_evicted_ms", "_order", "_window_ms")

    def __init__(self, capacity: int, window_ms: int) -> None:
        if capacity < 1 or window_ms < 1:
            raise ValueError(f"capacity and window_ms must be >= 1, got {capacity} and {window_ms}")
        self._capacity = capacity
        self._window_ms = window_ms
        self._by_key: dict[tuple[int, int], _Entry] = {}  # (post_id, window bucket) -> entry
        self._order: list[tuple[tuple[int, int], tuple[int, int]]] = []  # sorted (sort_key, key)
        self._evicted_ms = -1  # time of the newest evicted entry; older engagements are late

    def __len__(self) -> int:
        return len(self._order)

    def __repr__(self) -> str:
        return f"EngagementSequence(len={len(self)}, capacity={self._capacity}, window_ms={self._window_ms})"

    def add(self, e: Engagement) -> bool:
        """Fold one engagement in; returns whether the sequence changed."""
        if e.timestamp_ms <= self._evicted_ms:
            return False
        key = (e.post_id, e.timestamp_ms // self._window_ms)
        entry = self._by_key.get(key)
        if entry is None:
            entry = _Entry(e.post_id, e.author_id, {e.action}, e.timestamp_ms, e.product_surface, e.dwell_ms)
            self._by_key[key] = entry
            bisect.insort(self._order, (entry.sort_key(), key))
            if len(self._order) > self._capacity:
                (evicted_ms, _), evicted_key = self._order.pop(0)
                del self._by_key[evicted_key]
                self._evicted_ms = evicted_ms
            return True
        before = (len(entry.actions), entry.timestamp_ms, entry.dwell_ms)
        entry.actions.add(e.action)
        entry.dwell_ms = max(entry.dwell_ms, e.dwell_ms)
        if e.timestamp_ms > entry.timestamp_ms:
            self._order.remove((entry.sort_key(), key))
            entry.timestamp_ms = e.timestamp_ms
            entry.product_surface = e.product_surface  # the latest action's surface
            bisect.insort(self._order, (entry.sort_key(), key))
        return before != (len(entry.actions), entry.timestamp_ms, entry.dwell_ms)

    def latest(self, n: int) -> tuple[HistoryItem, ...]:
        """The newest ``n`` items, oldest first (newest last)."""
        if n <= 0:
            return ()
        return tuple(self._by_key[key].freeze() for _, key in self._order[-n:])
