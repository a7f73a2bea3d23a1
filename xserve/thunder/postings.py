"""Per-author posting lists in shared columns: what Thunder's query reads without touching a post object.

One :class:`PostingLists` per kind of list (originals, replies + reposts,
videos) holds, for every author with posts of that kind, the same sequence as
the store's deque of that author: oldest first, newest last, position ``i`` of
the deque at ``start + i`` of the columns. Each author's entries sit in one
segment of the shared columns (capacity a power of two, grown by doubling,
freed segments reused per capacity), so a query gathers the newest entries of
hundreds of authors with a few numpy operations (:meth:`PostingLists.newest`)
instead of a Python loop per author.

Columns, one slot per entry:

* ``time``: ``created_at_ms`` (int64);
* ``pid``: the post id (int64): exclusions and ties;
* ``repost_user``: ``repost_of_user_id`` of a repost, else :data:`NO_USER`: the
  viewer check ("drop reposts of the viewer's own posts");
* ``needs_parent``: 1 when the post names a parent post (``in_reply_to_post_id``):
  the reply rule must look the parent up;
* ``obj``: the ``LightPost`` itself (a list), returned by the query.

Columns are ``array.array`` (fast scalar writes on ingest); a query reads them
through zero-copy numpy views it drops before returning. A column is never
resized in place while a view may exist: growing builds a new array.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

import numpy as np

from xserve.schema import LightPost

__all__ = ["NO_USER", "PostingLists"]

NO_USER = -(2**63)  # repost_user of a post that is not a repost: no viewer has this id
_MIN_CAPACITY = 4


def _grown(col: array, size: int) -> array:
    """A new array holding ``col`` then zeros up to ``size`` (never resizes ``col``: a numpy view may hold it)."""
    out = array(col.typecode, col)
    out.frombytes(bytes(out.itemsize * (size - len(out))))
    return out


def _fields(p: LightPost) -> tuple[int, int, int, int]:
    repost_user = p.repost_of_user_id if p.repost_of_post_id is not None else NO_USER
    return p.created_at_ms, p.post_id, NO_USER if repost_user is None else repost_user, p.in_reply_to_post_id is not None


class PostingLists:
    """Authors' posting lists of one kind (see the module docstring). Pure; one owner calls it."""

    def __init__(self) -> None:
        self.rows: dict[int, int] = {}  # author id -> row of the per-author metadata
        self._free_rows: list[int] = []
        # Per row: the segment (base, capacity) and the live entries [start, end), absolute slots.
        self.base, self.capacity, self.start, self.end = array("q"), array("q"), array("q"), array("q")
        # Per slot: the columns.
        self.time, self.pid, self.repost_user = array("q"), array("q"), array("q")
        self.needs_parent = array("b")
        self.obj: list[LightPost | None] = []
        self._top = 0  # slots in use by segments, from 0 (free segments included)
        self._free: dict[int, list[int]] = {}  # capacity -> bases of free segments

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"PostingLists(authors={len(self.rows)}, slots={self._top})"

    # ------------------------------------------------------------------ segments

    def _alloc(self, capacity: int) -> int:
        free = self._free.get(capacity)
        if free:
            return free.pop()
        base = self._top
        self._top += capacity
        if self._top > len(self.obj):
            size = max(self._top, 2 * len(self.obj), 1024)
            self.time, self.pid, self.repost_user = (_grown(c, size) for c in (self.time, self.pid, self.repost_user))
            self.needs_parent = _grown(self.needs_parent, size)
            self.obj.extend([None] * (size - len(self.obj)))
        return base

    def _release(self, base: int, capacity: int) -> None:
        self.obj[base : base + capacity] = [None] * capacity
        self._free.setdefault(capacity, []).append(base)

    def _move(self, src: int, dst: int, n: int) -> None:
        """Copy ``n`` entries from slot ``src`` to ``dst`` (regions may overlap: slices copy first)."""
        for col in (self.time, self.pid, self.repost_user, self.needs_parent, self.obj):
            col[dst : dst + n] = col[src : src + n]

    def _make_room(self, r: int) -> None:
        """Row ``r``'s segment is full at its end: compact it in place, or move it to one twice as large."""
        base, cap, start, end = self.base[r], self.capacity[r], self.start[r], self.end[r]
        n = end - start
        if 2 * n <= cap and start > base:
            self._move(start, base, n)
            self.obj[base + n : end] = [None] * (end - base - n)
        else:
            new_cap = 2 * cap
            new_base = self._alloc(new_cap)
            self._move(start, new_base, n)
            self._release(base, cap)
            self.base[r], self.capacity[r] = new_base, new_cap
            base = new_base
        self.start[r], self.end[r] = base, base + n

    def _new_row(self, author: int) -> int:
        base = self._alloc(_MIN_CAPACITY)
        if self._free_rows:
            r = self._free_rows.pop()
            self.base[r], self.capacity[r], self.start[r], self.end[r] = base, _MIN_CAPACITY, base, base
        else:
            r = len(self.base)
            for col, v in ((self.base, base), (self.capacity, _MIN_CAPACITY), (self.start, base), (self.end, base)):
                col.append(v)  # no numpy view of these outlives a query
        self.rows[author] = r
        return r

    def _write(self, i: int, p: LightPost) -> None:
        self.time[i], self.pid[i], self.repost_user[i], self.needs_parent[i] = _fields(p)
        self.obj[i] = p

    # ------------------------------------------------------------------ writes (mirror the store's deque operations)

    def append(self, author: int, p: LightPost) -> None:
        """``p`` becomes the newest entry of ``author``'s list."""
        r = self.rows.get(author)
        if r is None:
            r = self._new_row(author)
        end = self.end[r]
        if end == self.base[r] + self.capacity[r]:
            self._make_room(r)
            end = self.end[r]
        self._write(end, p)
        self.end[r] = end + 1

    def insert(self, author: int, i: int, p: LightPost) -> None:
        """``p`` at position ``i`` (0 = oldest) of ``author``'s list, as ``deque.insert``."""
        r = self.rows.get(author)
        if r is None:
            r = self._new_row(author)
        if self.end[r] == self.base[r] + self.capacity[r]:
            self._make_room(r)
        at, end = self.start[r] + i, self.end[r]
        self._move(at, at + 1, end - at)
        self._write(at, p)
        self.end[r] = end + 1

    def remove(self, author: int, i: int) -> None:
        """Drop position ``i`` of ``author``'s list, as ``del deque[i]``; an emptied list is dropped."""
        r = self.rows[author]
        at, end = self.start[r] + i, self.end[r]
        self._move(at + 1, at, end - at - 1)
        self.obj[end - 1] = None
        self.end[r] = end - 1
        if end - 1 == self.start[r]:
            self.drop(author)

    def pop_oldest(self, author: int, n: int) -> None:
        """Drop the ``n`` oldest entries of ``author``'s list, as ``popleft`` ``n`` times; an emptied list is dropped."""
        r = self.rows[author]
        start = self.start[r]
        self.obj[start : start + n] = [None] * n
        self.start[r] = start + n
        if start + n >= self.end[r]:
            self.drop(author)

    def drop(self, author: int) -> None:
        """Forget ``author``'s list (all of it)."""
        r = self.rows.pop(author, None)
        if r is None:
            return
        self._release(self.base[r], self.capacity[r])
        self.start[r] = self.end[r] = self.base[r]
        self._free_rows.append(r)
        if not self.rows:  # everything gone (a mass expiry): give the memory back
            self.__init__()  # type: ignore[misc]

    # ------------------------------------------------------------------ reads

    def posts(self, author: int) -> list[LightPost]:
        """``author``'s list, oldest first (tests, debugging)."""
        r = self.rows.get(author)
        return [] if r is None else self.obj[self.start[r] : self.end[r]]  # type: ignore[return-value]

    def newest(
        self, authors: Sequence[int], window: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The newest ``window`` entries of each of ``authors``' lists, newest first, all lists concatenated.

        Returns ``(slots, first, taken, length, which)``: the slots (int64) of
        the gathered entries; per author with a list (in ``authors`` order, the
        others skipped), the index of its first entry in ``slots``, how many
        were taken, how long its whole list is, and its index in ``authors``.
        Vectorised: one dict lookup per author, then numpy.
        """
        get = self.rows.get
        n = len(authors)
        rows = np.fromiter(map(get, authors, [-1] * n), dtype=np.int64, count=n)
        which = np.flatnonzero(rows >= 0)
        rows = rows[which]
        end = np.frombuffer(self.end, dtype=np.int64)[rows] if len(rows) else np.zeros(0, dtype=np.int64)
        length = end - np.frombuffer(self.start, dtype=np.int64)[rows] if len(rows) else end
        taken = np.minimum(length, window)
        first = np.zeros(len(rows), dtype=np.int64)
        np.cumsum(taken[:-1], out=first[1:])
        total = int(first[-1] + taken[-1]) if len(rows) else 0
        # slot of the j-th newest entry of a list ending at `end`: end - 1 - j
        slots = np.repeat(end - 1 + first, taken) - np.arange(total, dtype=np.int64)
        return slots, first, taken, length, which

    def columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Zero-copy views of ``time``, ``pid``, ``repost_user``, ``needs_parent``: drop them before any write."""
        return (
            np.frombuffer(self.time, dtype=np.int64),
            np.frombuffer(self.pid, dtype=np.int64),
            np.frombuffer(self.repost_user, dtype=np.int64),
            np.frombuffer(self.needs_parent, dtype=np.int8),
        )
