"""``LastKnownViewers``: the last user-store answer per viewer, kept to serve a feed while a shard restarts.

The ingress asks the user store for its viewer before every feed. When the
viewer's shard does not answer (killed, restarting, overloaded), the last
answer it gave for that viewer is still a safe basis for a feed: it holds the
viewer's blocks, mutes and muted keywords as of then, so a stale feed never
shows an author the viewer had blocked at that time. The response then says
``user_store_stale`` in its ``degraded`` list.

Bounded by bytes, not entries: an answer's size grows with the viewer's follow
graph (up to ``serving.max_edges_per_kind`` follows), so a count bound alone
would not bound memory. Answers are kept as the msgpack bytes the shard sent
(about 9 bytes per id), least recently used first out.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["LastKnownViewers"]


class LastKnownViewers:
    """LRU ``user_id -> bytes`` holding at most ``max_bytes`` of values (0 disables it)."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.nbytes = 0  # sum of the lengths of the values held
        self._items: OrderedDict[int, bytes] = OrderedDict()

    def __repr__(self) -> str:
        return f"LastKnownViewers(max_bytes={self.max_bytes}, held={len(self._items)}, nbytes={self.nbytes})"

    def __len__(self) -> int:
        return len(self._items)

    def put(self, user_id: int, blob: bytes) -> None:
        """Remember ``blob`` for ``user_id`` (an answer larger than the whole budget is not kept)."""
        old = self._items.pop(user_id, None)
        if old is not None:
            self.nbytes -= len(old)
        if len(blob) > self.max_bytes:
            return
        self._items[user_id] = blob
        self.nbytes += len(blob)
        while self.nbytes > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self.nbytes -= len(evicted)

    def get(self, user_id: int) -> bytes | None:
        blob = self._items.get(user_id)
        if blob is not None:
            self._items.move_to_end(user_id)
        return blob
