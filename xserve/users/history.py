"""The engagement history: a user's actions aggregated into the entries the ranker and the user tower see.

One rule, shared by training and serving. Training aggregates a whole log at once with
``aggregate_actions`` (vectorised; ``xserve/phoenix/training/data.py`` calls it); the user store
aggregates a table the same way when it loads (``UserStore.load_engagement_arrays``) and folds live
engagements one at a time with ``EngagementSequence``, whose fold is the same rule.
``tests/phoenix/test_history_parity.py`` checks that the featurized context of a served
``RankRequest`` equals the training example's context cut at the same time.

The rule, after the reference ``UserActionSeqQueryHydrator`` (``docs/reference.md`` §2.3):

* **window**: every action of one user on one post inside one fixed window
  ``timestamp_ms // window_ms`` (reference ``UAS_WINDOW_TIME_MS``, 5 min) forms one entry. Fixed
  windows rather than "merge while the gap stays under the window": the result does not depend on
  the order actions arrive in, applying an action twice changes nothing, and a history cut at a
  window boundary holds exactly the entries serving had at that time (a gap-merged entry can
  straddle any cut, so training and serving could never agree on it).
* **entry**: the set of actions, the latest action's time, the longest dwell (``dwell_ms`` of rows
  whose action is not a ``DURATION_ACTIONS`` one: on those rows ``dwell_ms`` is that action's own
  duration, kept apart per action in ``AggregatedActions.durations_ms`` as training labels), and the product
  surface of the *first* action (on a tie in time, the smaller surface value, so arrival order never
  matters). The first action's surface is where the post was seen, which is what a served candidate
  carries; a later action's surface often follows from the action itself (a reply is written in the
  conversation view), so as a training candidate's feature it would give the label away.
* **order**: by (time, post id), oldest first.
* **truncation**: only the newest entries are kept (``capacity`` here; the models take the newest
  ``phoenix.history_len`` of what they are given, as training does).
* **context window** (``window_start``): what the ranker and the towers see of a sequence of ``N``
  entries (numbered from the user's first, 0-based) is entries ``[d, N)`` with
  ``d = ceil(max(0, N - history_len) / trim_block) * trim_block``. The window grows by appending until
  it holds ``history_len`` entries, then drops the oldest ``trim_block`` entries at once and grows
  again: it holds ``history_len - trim_block + 1 .. history_len`` entries and its first entry moves
  only once per ``trim_block`` new entries. Between those moves a context only grows at its end, so
  the ranker's KV cache reuses the cached prefix (``phoenix/serving/kv_cache.py``); a window that slid
  by one entry on every engagement would change every position and be re-encoded whole each time.
  ``trim_block = 1`` is the plain sliding window (the newest ``history_len``). Training cuts its
  examples by the same function (``phoenix/training/data.py``), serving through
  ``EngagementSequence.window``.

``EngagementSequence`` is bounded: at most ``capacity`` entries. When full, the oldest entry is
evicted and the sequence remembers the evicted time; later-arriving engagements at or before it are
dropped (they would be evicted again anyway). It also counts the entries it evicted (or that a table
load left out, ``note_dropped``), so it knows ``N``, each entry's number from the user's first, which
the context window is anchored to.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from xserve.schema import ACTION_INDEX, ACTIONS, DURATION_ACTIONS, Action, Engagement, HistoryItem, ProductSurface

__all__ = ["AggregatedActions", "EngagementSequence", "aggregate_actions", "window_of", "window_start"]


def window_of(timestamp_ms, window_ms: int):
    """The fixed window an action falls in (an int or an array, like ``timestamp_ms``)."""
    return timestamp_ms // window_ms


def window_start(num_entries, history_len: int, trim_block: int):
    """First entry of the context window of a user with ``num_entries`` entries (an int or an array):
    the oldest ``trim_block``-multiple of entries is dropped once the window would pass ``history_len``
    (module docstring). The window is entries ``[window_start, num_entries)``. A block is at most half of
    ``history_len``, so the window always keeps at least half its length (a block as long as the window
    would leave a short model, e.g. ``history_len`` 16, with 8 entries on average instead of 16)."""
    if trim_block < 1 or history_len < 1:
        raise ValueError(f"trim_block and history_len must be >= 1, got {trim_block} and {history_len}")
    block = max(1, min(trim_block, history_len // 2))
    over = np.maximum(num_entries - history_len, 0)
    return -(-over // block) * block  # ceil(over / block) blocks


@dataclass
class AggregatedActions:
    """Entries of many users, sorted by (user, time, post); user ``k``'s entries are ``[starts[k], ends[k])``."""

    user: np.ndarray  # (E,) int64 user id
    post: np.ndarray  # (E,) int64
    author: np.ndarray  # (E,) int64
    bits: np.ndarray  # (E,) int64 action bitmask, bit i = ACTIONS[i]
    ts: np.ndarray  # (E,) int64 the latest action's time, ms
    first_ts: np.ndarray  # (E,) int64 the first action's time, ms (what a later fold compares surfaces by)
    surface: np.ndarray  # (E,) int64 the first action's product surface
    dwell_ms: np.ndarray  # (E,) int64 the longest dwell
    starts: np.ndarray  # (U,) first entry of each user
    ends: np.ndarray  # (U,) one past the last entry of each user
    durations_ms: np.ndarray | None = None  # (E, 3) the longest duration of each DURATION_ACTIONS action, 0 = none

    def __len__(self) -> int:
        return len(self.user)

    def items(self, rows: range | np.ndarray) -> list[HistoryItem]:
        """Entries ``rows`` as ``HistoryItem``s (fold each with ``add_item(item, first_ms=first_ts[row])``)."""
        return [HistoryItem(int(self.post[i]), int(self.author[i]),
                            frozenset(ACTIONS[a] for a in range(len(ACTIONS)) if (int(self.bits[i]) >> a) & 1),
                            int(self.ts[i]), ProductSurface(int(self.surface[i])), int(self.dwell_ms[i]))
                for i in rows]


def aggregate_actions(user: np.ndarray, post: np.ndarray, author: np.ndarray, action: np.ndarray, ts: np.ndarray,
                      surface: np.ndarray, dwell_ms: np.ndarray, window_ms: int) -> AggregatedActions:
    """Raw actions (equal-length arrays, any order; ``action`` = ``ACTION_INDEX`` codes) → entries (module rule)."""
    if window_ms < 1:
        raise ValueError(f"window_ms must be >= 1, got {window_ms}")
    user, post, author, ts = (np.asarray(x, np.int64) for x in (user, post, author, ts))
    action, surface, dwell_ms = (np.asarray(x, np.int64) for x in (action, surface, dwell_ms))
    window = window_of(ts, window_ms)
    # group by (user, post, window); within a group the first row is the first action (ties: smaller surface)
    order = np.lexsort((surface, ts, window, post, user))
    u, p, w = user[order], post[order], window[order]
    new = np.ones(len(order), bool)
    new[1:] = (u[1:] != u[:-1]) | (p[1:] != p[:-1]) | (w[1:] != w[:-1])
    first = np.flatnonzero(new)
    last = order[np.r_[first[1:], len(order)] - 1]
    head = order[first]
    bits = np.bitwise_or.reduceat(np.left_shift(1, action[order]), first) if len(order) else np.zeros(0, np.int64)
    own = [np.where(action[order] == ACTION_INDEX[a], dwell_ms[order], 0) for a in DURATION_ACTIONS]
    plain = np.where(np.isin(action[order], [ACTION_INDEX[a] for a in DURATION_ACTIONS]), 0, dwell_ms[order])
    dwell = np.maximum.reduceat(plain, first) if len(order) else np.zeros(0, np.int64)
    durations = (np.stack([np.maximum.reduceat(d, first) for d in own], 1) if len(order)
                 else np.zeros((0, len(DURATION_ACTIONS)), np.int64))
    g_user, g_post, g_ts = user[last], post[last], ts[last]
    by_time = np.lexsort((g_post, g_ts, g_user))  # each user's entries by (time, post)
    g_user = g_user[by_time]
    starts = np.flatnonzero(np.r_[True, g_user[1:] != g_user[:-1]]) if len(g_user) else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], len(g_user)].astype(np.int64)
    return AggregatedActions(user=g_user, post=g_post[by_time], author=author[last][by_time], bits=bits[by_time],
                             ts=g_ts[by_time], first_ts=ts[head][by_time], surface=surface[head][by_time],
                             dwell_ms=dwell[by_time], starts=starts, ends=ends, durations_ms=durations[by_time])


@dataclass(slots=True)
class _Entry:
    post_id: int
    author_id: int
    actions: set[Action]
    timestamp_ms: int  # the latest action's time
    first_ms: int  # the first action's time
    product_surface: ProductSurface  # the first action's surface (ties: the smaller value)
    dwell_ms: int  # the longest dwell

    def sort_key(self) -> tuple[int, int]:
        return (self.timestamp_ms, self.post_id)

    def freeze(self) -> HistoryItem:
        return HistoryItem(
            self.post_id, self.author_id, frozenset(self.actions), self.timestamp_ms, self.product_surface, self.dwell_ms
        )


class EngagementSequence:
    """One user's entries, newest last, folded in one engagement at a time (see the module docstring)."""

    __slots__ = ("_by_key", "_capacity", "_dropped", "_evicted_ms", "_order", "_window_ms")

    def __init__(self, capacity: int, window_ms: int) -> None:
        if capacity < 1 or window_ms < 1:
            raise ValueError(f"capacity and window_ms must be >= 1, got {capacity} and {window_ms}")
        self._capacity = capacity
        self._window_ms = window_ms
        self._by_key: dict[tuple[int, int], _Entry] = {}  # (post_id, window) -> entry
        self._order: list[tuple[tuple[int, int], tuple[int, int]]] = []  # sorted (sort_key, key)
        self._evicted_ms = -1  # time of the newest evicted entry; older engagements are late
        self._dropped = 0  # entries older than the ones held (evicted, or left out by a table load)

    def __len__(self) -> int:
        return len(self._order)

    def __repr__(self) -> str:
        return f"EngagementSequence(len={len(self)}, capacity={self._capacity}, window_ms={self._window_ms})"

    def add(self, e: Engagement) -> bool:
        """Fold one engagement in; returns whether the sequence changed."""
        dwell = 0 if e.action in DURATION_ACTIONS else e.dwell_ms  # those rows carry their action's own duration
        return self.add_item(HistoryItem(e.post_id, e.author_id, frozenset((e.action,)), e.timestamp_ms,
                                         e.product_surface, dwell))

    def add_item(self, item: HistoryItem, first_ms: int | None = None) -> bool:
        """Fold in an entry already aggregated by the same rule (a table load) whose first action was at
        ``first_ms`` (default: the item is one action); returns whether anything changed.

        The fold is associative (a union, two maxima and the surface of the minimum (time, surface)), so
        folding an aggregated entry equals folding the actions it holds, one by one, in any order.
        """
        if item.timestamp_ms <= self._evicted_ms:
            return False
        first_ms = item.timestamp_ms if first_ms is None else first_ms
        key = (item.post_id, window_of(item.timestamp_ms, self._window_ms))
        entry = self._by_key.get(key)
        if entry is None:
            entry = _Entry(item.post_id, item.author_id, set(item.actions), item.timestamp_ms, first_ms,
                           ProductSurface(item.product_surface), item.dwell_ms)
            self._by_key[key] = entry
            bisect.insort(self._order, (entry.sort_key(), key))
            if len(self._order) > self._capacity:
                (evicted_ms, _), evicted_key = self._order.pop(0)
                del self._by_key[evicted_key]
                self._evicted_ms = evicted_ms
                self._dropped += 1
            return True
        before = (len(entry.actions), entry.timestamp_ms, entry.product_surface, entry.dwell_ms)
        entry.actions |= item.actions
        entry.dwell_ms = max(entry.dwell_ms, item.dwell_ms)
        if item.timestamp_ms > entry.timestamp_ms:
            self._order.remove((entry.sort_key(), key))
            entry.timestamp_ms = item.timestamp_ms
            bisect.insort(self._order, (entry.sort_key(), key))
        if (first_ms, item.product_surface) < (entry.first_ms, entry.product_surface):
            entry.first_ms, entry.product_surface = first_ms, ProductSurface(item.product_surface)
        return before != (len(entry.actions), entry.timestamp_ms, entry.product_surface, entry.dwell_ms)

    def note_dropped(self, count: int, newest_ms: int) -> None:
        """A table load left out the user's ``count`` oldest entries, the newest of them at ``newest_ms``:
        count them as evicted (call before folding in the entries after them)."""
        if count > 0:
            self._dropped += count
            self._evicted_ms = max(self._evicted_ms, newest_ms)

    @property
    def num_entries(self) -> int:
        """Entries since the user's first: the ones held and the ones dropped before them."""
        return self._dropped + len(self._order)

    def window(self, history_len: int, trim_block: int) -> tuple[HistoryItem, ...]:
        """The context window (``window_start``), oldest first; ``trim_block = 1`` is ``latest(history_len)``."""
        if history_len <= 0:
            return ()
        start = int(window_start(self.num_entries, history_len, trim_block)) - self._dropped
        return tuple(self._by_key[key].freeze() for _, key in self._order[max(start, 0):])

    def latest(self, n: int) -> tuple[HistoryItem, ...]:
        """The newest ``n`` items, oldest first (newest last)."""
        if n <= 0:
            return ()
        return tuple(self._by_key[key].freeze() for _, key in self._order[-n:])

