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
  the reply rule applies;
* ``obj``: the ``LightPost`` itself (a numpy object array: a query gathers the
  posts it returns in one C loop, whose cache misses overlap, about three times
  faster than indexing a list post by post).

A list of replies (built with a :class:`ParentTable`) has three more, so the
reply rule is decided with numpy, without touching a post:

* ``parent``: the parent's handle in the :class:`ParentTable` (int32), or -1
  when the post names no parent;
* ``conv``: ``conversation_id``, or :data:`NO_CONVERSATION`;
* ``reply_user``: ``in_reply_to_user_id``, or :data:`NO_USER`.

The :class:`ParentTable` holds, per post some reply names as its parent, what
the rule reads of it as the store holds it now (its time or absent; an original,
or the post it replies to); the store refreshes an entry whenever
that post enters or leaves its tables, so a parent deleted, trimmed, evicted or
arriving late changes one entry, not the replies naming it.

Columns are ``array.array`` (fast scalar writes on ingest); a query reads them
through zero-copy numpy views it drops before returning. A column is never
resized in place while a view may exist: growing builds a new array.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence

import numpy as np

from xserve.schema import LightPost

__all__ = ["ABSENT", "NO_CONVERSATION", "NO_USER", "ORIGINAL", "AuthorIndex", "ParentTable", "PostingLists"]

NO_USER = -(2**63)  # repost_user of a post that is not a repost (reply_user of one that names nobody): no user has this id
NO_CONVERSATION = -1  # conv of a reply without a conversation id (ids are positive): matches no parent
_NO_REPLY_TO = -2  # link of a parent that is a repost or replies to no post: matches no reply's conv
ORIGINAL = -3  # link of a parent that is an original (neither a reply nor a repost): matches no reply's conv
ABSENT = -(2**63)  # time of a parent not in the store: older than any cutoff
_MIN_CAPACITY = 4
_GOLDEN = 0x9E3779B97F4A7C15  # Fibonacci hashing: the top bits of id * 2^64/phi spread sequential ids
_U64 = 2**64 - 1
_EMPTY, _GONE = 0, -1  # keys of a never-used and a vacated slot of AuthorIndex (author ids are positive)


def _grown(col: array, size: int) -> array:
    """A new array holding ``col`` then zeros up to ``size`` (never resizes ``col``: a numpy view may hold it)."""
    out = array(col.typecode, col)
    out.frombytes(bytes(out.itemsize * (size - len(out))))
    return out


def _fields(p: LightPost) -> tuple[int, int, int, int]:
    repost_user = p.repost_of_user_id if p.repost_of_post_id is not None else NO_USER
    return p.created_at_ms, p.post_id, NO_USER if repost_user is None else repost_user, p.in_reply_to_post_id is not None


class AuthorIndex:
    """Author id -> that author's row in each of ``kinds`` :class:`PostingLists`, for a query's vectorised lookup.

    An open-addressing hash table (linear probing, Fibonacci hashing, load at
    most one half) in flat arrays: :meth:`find` locates thousands of
    followed authors with a few numpy gathers, where a dict costs one
    cache-missing Python lookup per author and kind. The lists keep it current
    (:meth:`set` when a list gets a row, :meth:`clear` when it drops one); a
    vacated slot keeps a ``_GONE`` key until the next rehash. Pure; one owner calls it.
    """

    def __init__(self, kinds: int) -> None:
        self.kinds = kinds
        self._reset(1024)

    def _reset(self, capacity: int) -> None:
        self.bits = capacity.bit_length() - 1  # capacity is 2**bits
        self.keys = array("q", bytes(8 * capacity))  # author id, _EMPTY or _GONE
        self.rows = [array("i", [-1]) * capacity for _ in range(self.kinds)]  # per kind: the author's row, -1: none
        self.live = 0  # slots holding an author
        self.used = 0  # slots not _EMPTY (authors and _GONE)

    def __len__(self) -> int:
        return self.live

    def __repr__(self) -> str:
        return f"AuthorIndex(authors={self.live}, capacity={len(self.keys)})"

    def _slot(self, author: int) -> int:
        """The slot holding ``author``, or -1."""
        keys, mask = self.keys, len(self.keys) - 1
        i = ((author * _GOLDEN) & _U64) >> (64 - self.bits)
        while True:
            k = keys[i]
            if k == author:
                return i
            if k == _EMPTY:
                return -1
            i = (i + 1) & mask

    def _add(self, author: int) -> int:
        """A slot for ``author`` (not in the table): the first vacated or empty slot of its probe sequence."""
        if 2 * (self.used + 1) > len(self.keys):
            self._rehash()
        keys, mask = self.keys, len(self.keys) - 1
        i = ((author * _GOLDEN) & _U64) >> (64 - self.bits)
        while keys[i] != _EMPTY and keys[i] != _GONE:
            i = (i + 1) & mask
        if keys[i] == _EMPTY:
            self.used += 1
        keys[i] = author
        self.live += 1
        return i

    def _rehash(self) -> None:
        """Rebuild at a quarter load (vacated slots dropped): amortised over the adds since the last one."""
        at = np.flatnonzero(np.frombuffer(self.keys, dtype=np.int64) > 0).tolist()
        held = [(self.keys[i], [r[i] for r in self.rows]) for i in at]
        capacity = 1024
        while capacity < 4 * (len(held) + 1):
            capacity *= 2
        self._reset(capacity)
        for author, rows in held:
            i = self._add(author)
            for kind, r in enumerate(rows):
                self.rows[kind][i] = r

    def set(self, author: int, kind: int, row: int) -> None:
        """``author``'s list of ``kind`` is at ``row``."""
        if author <= 0:  # 0 and -1 mark empty and vacated slots
            raise ValueError(f"author ids are positive, got {author}")
        i = self._slot(author)
        if i < 0:
            i = self._add(author)
        self.rows[kind][i] = row

    def clear(self, author: int, kind: int) -> None:
        """``author`` has no list of ``kind`` any more (the author leaves once it has none of any kind)."""
        i = self._slot(author)
        if i < 0:
            return
        self.rows[kind][i] = -1
        if all(r[i] < 0 for r in self.rows):
            self.keys[i] = _GONE
            self.live -= 1

    def find(self, authors: np.ndarray) -> np.ndarray:
        """The slot of each of ``authors`` (int64), -1 for an author not in the table. Vectorised probing."""
        keys = np.frombuffer(self.keys, dtype=np.int64)
        mask = len(keys) - 1
        slot = ((authors.astype(np.uint64) * np.uint64(_GOLDEN)) >> np.uint64(64 - self.bits)).astype(np.int64)
        found = np.full(len(authors), -1, dtype=np.int64)
        pending = np.arange(len(authors))
        while len(pending) > 16:  # each round costs a few numpy calls: the last few probe sequences go one by one
            at = slot[pending]
            k = keys[at]
            hit = k == authors[pending]
            found[pending[hit]] = at[hit]
            more = (k != _EMPTY) & ~hit
            pending = pending[more]
            slot[pending] = (at[more] + 1) & mask
        for j, i in zip(pending.tolist(), slot[pending].tolist()):
            author = int(authors[j])
            while True:
                k = self.keys[i]
                if k == author or k == _EMPTY:
                    found[j] = i if k == author else -1
                    break
                i = (i + 1) & mask
        return found

    def rows_of(self, kind: int, found: np.ndarray) -> np.ndarray:
        """The rows of ``kind`` of the authors at ``found`` (:meth:`find`'s slots): -1 for none."""
        rows = np.frombuffer(self.rows[kind], dtype=np.int32)[found].astype(np.int64)
        rows[found < 0] = -1
        return rows


class ParentTable:
    """What the reply rule reads of each post that a held reply names as its parent, one entry (handle) per post.

    ``lookup(post_id)`` is the store's view of a post (its own or a stub, else
    None). Per handle, one 16-byte record (a query's gather of it is one cache
    line): ``time`` (``created_at_ms``, :data:`ABSENT` when the store does not
    hold the post) and ``link``: :data:`ORIGINAL` for a post that is neither a
    reply nor a repost, else its ``in_reply_to_post_id`` (or a value no
    conversation id has). The owner calls :meth:`refresh` whenever a post
    enters or leaves what ``lookup`` sees, and :meth:`collect` now and then to
    free the entries no held reply names any more. Pure; one owner calls it.
    """

    def __init__(self, lookup: Callable[[int], LightPost | None]) -> None:
        self.lookup = lookup
        self.handles: dict[int, int] = {}  # parent post id -> handle
        self.ids = array("q")  # handle -> parent post id (0: a free handle)
        self.records = array("q")  # handle h -> time at 2h, link at 2h+1
        self._free: list[int] = []

    def __len__(self) -> int:
        return len(self.handles)

    def __repr__(self) -> str:
        return f"ParentTable(parents={len(self.handles)}, handles={len(self.ids)})"

    def state(self, post_id: int) -> tuple[int, int]:
        """``(time, link)`` of ``post_id`` as ``lookup`` sees it now."""
        p = self.lookup(post_id)
        if p is None:
            return ABSENT, _NO_REPLY_TO
        if p.in_reply_to_post_id is None and p.in_reply_to_user_id is None and p.repost_of_post_id is None:
            return p.created_at_ms, ORIGINAL
        return p.created_at_ms, _NO_REPLY_TO if p.in_reply_to_post_id is None else p.in_reply_to_post_id

    def handle(self, post_id: int) -> int:
        """The handle of ``post_id``'s entry, made (from ``lookup``) if it has none."""
        h = self.handles.get(post_id)
        if h is not None:
            return h
        if self._free:
            h = self._free.pop()
            self.ids[h] = post_id
            self.records[2 * h], self.records[2 * h + 1] = self.state(post_id)
        else:
            h = len(self.ids)
            self.ids.append(post_id)  # no numpy view of these outlives a query
            self.records.extend(self.state(post_id))
        self.handles[post_id] = h
        return h

    def refresh(self, post_id: int) -> None:
        """``post_id`` entered or left the store's tables: re-read its entry (if a reply names it)."""
        h = self.handles.get(post_id)
        if h is not None:
            self.records[2 * h], self.records[2 * h + 1] = self.state(post_id)

    def collect(self, in_use: np.ndarray) -> int:
        """Free every entry whose handle is not in ``in_use`` (the handles held replies name); returns how many."""
        used = np.zeros(len(self.ids), dtype=bool)
        used[in_use] = True
        ids = np.frombuffer(self.ids, dtype=np.int64) if len(self.ids) else np.zeros(0, dtype=np.int64)
        free = np.flatnonzero(~used & (ids != 0))
        freed_ids = ids[free].tolist()
        del ids
        for h, post_id in zip(free.tolist(), freed_ids):
            del self.handles[post_id]
            self.ids[h] = 0
            self._free.append(h)
        if not self.handles:  # nothing named: give the memory back
            self.__init__(self.lookup)  # type: ignore[misc]
        elif len(freed_ids) > len(self.handles) // 2:
            self.handles = dict(self.handles)  # CPython dicts never shrink on delete
        return len(freed_ids)

    def columns(self) -> np.ndarray:
        """A zero-copy ``(handles, 2)`` view of the records (time, link): drop it before any write."""
        return np.frombuffer(self.records, dtype=np.int64).reshape(-1, 2)


class PostingLists:
    """Authors' posting lists of one kind (see the module docstring). Pure; one owner calls it.

    ``parents`` given: the lists hold replies, with the reply columns and their parents' handles in it.
    ``index`` given: the lists keep their authors' rows in it, as kind ``kind``.
    """

    def __init__(self, parents: ParentTable | None = None, index: AuthorIndex | None = None, kind: int = 0) -> None:
        self.parents = parents
        self.index, self.kind = index, kind
        self.rows: dict[int, int] = {}  # author id -> row of the per-author metadata
        self._free_rows: list[int] = []
        # Per row: the segment (base, capacity) and the live entries [start, end), absolute slots.
        self.base, self.capacity, self.start, self.end = array("q"), array("q"), array("q"), array("q")
        # Per slot: the columns.
        self.time, self.pid, self.repost_user = array("q"), array("q"), array("q")
        self.needs_parent = array("b")
        # Per slot, lists of replies only (empty otherwise): parent handle, conversation, addressee.
        self.parent, self.conv, self.reply_user = array("i"), array("q"), array("q")
        self.obj: np.ndarray = np.empty(0, dtype=object)  # LightPost or None per slot
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
            size = max(self._top, len(self.obj) + len(self.obj) // 2, 1024)  # 1.5x: less memory idle than doubling
            self.time, self.pid, self.repost_user = (_grown(c, size) for c in (self.time, self.pid, self.repost_user))
            self.needs_parent = _grown(self.needs_parent, size)
            if self.parents is not None:
                self.parent, self.conv, self.reply_user = (_grown(c, size) for c in (self.parent, self.conv, self.reply_user))
            obj = np.empty(size, dtype=object)  # all None
            obj[: len(self.obj)] = self.obj
            self.obj = obj
        return base

    def _release(self, base: int, capacity: int) -> None:
        self.obj[base : base + capacity] = None
        self._free.setdefault(capacity, []).append(base)

    def _move(self, src: int, dst: int, n: int) -> None:
        """Copy ``n`` entries from slot ``src`` to ``dst`` (regions may overlap: slices copy first, numpy too)."""
        for col in (self.time, self.pid, self.repost_user, self.needs_parent, self.obj, *self._reply_columns()):
            col[dst : dst + n] = col[src : src + n]

    def _reply_columns(self) -> tuple[array, ...]:
        return () if self.parents is None else (self.parent, self.conv, self.reply_user)

    def _make_room(self, r: int) -> None:
        """Row ``r``'s segment is full at its end: compact it in place, or move it to one twice as large."""
        base, cap, start, end = self.base[r], self.capacity[r], self.start[r], self.end[r]
        n = end - start
        if 2 * n <= cap and start > base:
            self._move(start, base, n)
            self.obj[base + n : end] = None
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
        if self.index is not None:
            self.index.set(author, self.kind, r)
        return r

    def _write(self, i: int, p: LightPost) -> None:
        self.time[i], self.pid[i], self.repost_user[i], self.needs_parent[i] = _fields(p)
        self.obj[i] = p
        if self.parents is not None:
            parent, conv, user = p.in_reply_to_post_id, p.conversation_id, p.in_reply_to_user_id
            self.parent[i] = -1 if parent is None else self.parents.handle(parent)
            self.conv[i] = NO_CONVERSATION if conv is None else conv
            self.reply_user[i] = NO_USER if user is None else user

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
        self.obj[start : start + n] = None
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
        if self.index is not None:
            self.index.clear(author, self.kind)
        if not self.rows:  # everything gone (a mass expiry): give the memory back
            self.__init__(self.parents, self.index, self.kind)  # type: ignore[misc]

    # ------------------------------------------------------------------ reads

    def posts(self, author: int) -> list[LightPost]:
        """``author``'s list, oldest first (tests, debugging)."""
        r = self.rows.get(author)
        return [] if r is None else self.obj[self.start[r] : self.end[r]].tolist()

    def newest(
        self, authors: Sequence[int], window: int, rows: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The newest ``window`` entries of each of ``authors``' lists, newest first, all lists concatenated.

        Returns ``(slots, first, taken, length, which)``: the slots (int64) of
        the gathered entries; per author with a list (in ``authors`` order, the
        others skipped), the index of its first entry in ``slots``, how many
        were taken, how long its whole list is, and its index in ``authors``.
        ``rows``: the authors' rows when the caller found them
        (:meth:`AuthorIndex.rows_of`, -1 for none); else one dict lookup per author. Then numpy.
        """
        if rows is None:
            n = len(authors)
            rows = np.fromiter(map(self.rows.get, authors, [-1] * n), dtype=np.int64, count=n)
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

    def parents_in_use(self) -> np.ndarray:
        """The parent handles the held replies name (with repeats): what :meth:`ParentTable.collect` keeps."""
        if self.parents is None or not self.rows:
            return np.zeros(0, dtype=np.int64)
        rows = np.fromiter(self.rows.values(), dtype=np.int64, count=len(self.rows))
        start = np.frombuffer(self.start, dtype=np.int64)[rows]
        length = np.frombuffer(self.end, dtype=np.int64)[rows] - start
        first = np.zeros(len(rows), dtype=np.int64)
        np.cumsum(length[:-1], out=first[1:])
        slots = np.repeat(start - first, length) + np.arange(int(length.sum()), dtype=np.int64)
        handles = np.frombuffer(self.parent, dtype=np.int32)[slots]
        return handles[handles >= 0]

    def reply_columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Zero-copy views of ``parent``, ``conv``, ``reply_user`` (lists of replies): drop them before any write."""
        return (
            np.frombuffer(self.parent, dtype=np.int32),
            np.frombuffer(self.conv, dtype=np.int64),
            np.frombuffer(self.reply_user, dtype=np.int64),
        )

    def columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Zero-copy views of ``time``, ``pid``, ``repost_user``, ``needs_parent``: drop them before any write."""
        return (
            np.frombuffer(self.time, dtype=np.int64),
            np.frombuffer(self.pid, dtype=np.int64),
            np.frombuffer(self.repost_user, dtype=np.int64),
            np.frombuffer(self.needs_parent, dtype=np.int8),
        )
