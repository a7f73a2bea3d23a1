"""Training and evaluation examples from an engagement log, vectorised with numpy.

Input is any table with ``.column(name)`` (a ``pyarrow.Table`` in practice) with
the engagement-log columns ``user_id, post_id, author_id, action`` (an
``Action`` value string), ``timestamp_ms`` and optionally ``dwell_ms``,
``product_surface``, ``post_created_at_ms``; and optionally a posts table
(``post_id, author_id, created_at_ms``) as the candidate corpus.

1. **Aggregation** (``Entries``): by the one history rule that serving uses too
   (``xserve.users.history``): one user's actions on one post in one fixed
   window of ``history_window_ms`` (the reference's UAS window) form one entry,
   giving a multi-hot action bitmask, the latest timestamp, the first action's
   product surface and the longest dwell. Entries are sorted by (user, time,
   post): each user's chronological sequence is a slice.
2. **Time split**: entries at or after ``split_ms`` (the newest
   ``validation_fraction`` of the time span) are validation targets; their
   histories may reach back into the training period.
3. **Ranker examples** (``RankerExamples``): a cut at entry ``c`` of a user gives
   history = the context window of the entries before ``c`` (the newest ``history_len``,
   trimmed in blocks of ``trim_block`` as serving does: ``history_start``), positives = the
   next ``P`` entries (labels: their actions), negatives = ``N`` posts sampled
   uniformly among posts created in the ``max_age_ms`` before a positive's time
   (all-zero labels; surface copied from that positive so it does not leak the
   label). Cuts step by ``P``, so every entry is a positive once per epoch.
   The example's "now" is its first positive's time: the history's
   negative-feedback entries get their age buckets from it, as a served
   request's ``now_ms`` gives them (``features.history_age_buckets``), and the
   user's context (``Entries.user_context``, from the users table) is the same
   input a feed request gives the served model.
4. **Tower examples** (``TowerExamples``): the same, with only positive
   entries (``TOWER_POSITIVE_ACTIONS`` and no negative action) as targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from xserve.phoenix.model.features import Featurizer, age_buckets, content_ids, history_age_buckets, multi_hot
from xserve.phoenix.model.ranker import CandidateBatch, ContextBatch
from xserve.schema import ACTION_INDEX, ACTIONS, DURATION_ACTIONS, NEGATIVE_ACTIONS, Action, UserContext
from xserve.users.history import aggregate_actions, window_start

__all__ = [
    "TOWER_POSITIVE_ACTIONS",
    "context_batch",
    "history_index",
    "history_start",
    "Entries",
    "PostCorpus",
    "RankerExamples",
    "TowerExamples",
    "aggregate",
    "label_rates",
    "split_time",
    "user_context_ids",
]

TOWER_POSITIVE_ACTIONS: frozenset[Action] = frozenset({
    Action.FAVORITE, Action.REPLY, Action.REPOST, Action.QUOTE, Action.SHARE,
    Action.SHARE_VIA_DM, Action.SHARE_VIA_COPY_LINK, Action.FOLLOW_AUTHOR,
})
POSITIVE_MASK = sum(1 << ACTION_INDEX[a] for a in TOWER_POSITIVE_ACTIONS)
NEGATIVE_MASK = sum(1 << ACTION_INDEX[a] for a in NEGATIVE_ACTIONS)


def _col(table: Any, name: str, default: int | None = None) -> np.ndarray:
    if name not in table.column_names:
        if default is None:
            raise ValueError(f"engagement table has no column {name!r}")
        return np.full(table.num_rows, default, np.int64)
    col = table.column(name)
    if col.null_count:
        col = col.fill_null(default if default is not None else 0)
    return np.asarray(col.to_numpy(), dtype=np.int64)


def _action_index(table: Any) -> np.ndarray:
    """The ``action`` column (Action value strings) → int8 index into ``ACTIONS``."""
    col = table.column("action")
    if hasattr(col, "dictionary_encode"):  # pyarrow: map each distinct string once
        enc = col.combine_chunks().dictionary_encode() if hasattr(col, "combine_chunks") else col.dictionary_encode()
        names, codes = enc.dictionary.to_pylist(), np.asarray(enc.indices.to_numpy(), np.int64)
    else:
        names, codes = np.unique(np.asarray(col, dtype=object), return_inverse=True)
        names = list(names)
    lookup = np.empty(len(names), np.int8)
    for i, name in enumerate(names):
        try:
            lookup[i] = ACTION_INDEX[Action(name)]
        except ValueError:
            raise ValueError(f"engagement column 'action' has unknown action {name!r}") from None
    return lookup[codes]


@dataclass
class Entries:
    """Aggregated engagements, sorted by (user, time, post); per-user slices ``[starts[u], ends[u])``.

    Aggregated by the one history rule, ``xserve.users.history.aggregate_actions`` (serving uses it too).
    """

    user: np.ndarray  # (E,) int64 user id
    post: np.ndarray  # (E,) int64
    author: np.ndarray  # (E,) int64
    bits: np.ndarray  # (E,) int64 action bitmask (bit i = ACTIONS[i])
    ts: np.ndarray  # (E,) int64 latest action in the window, ms
    surface: np.ndarray  # (E,) int64 product surface of the first action
    dwell_ms: np.ndarray  # (E,) int64 longest dwell in the window
    created: np.ndarray  # (E,) int64 the post's creation time as the log gives it, 0 = unknown
    starts: np.ndarray  # (U,) first entry of each user
    ends: np.ndarray  # (U,) one past the last entry of each user
    created_share: float = 1.0  # share of log rows that carry post_created_at_ms (0 when the column is absent)
    durations_ms: np.ndarray | None = None  # (E, 3) longest duration of each DURATION_ACTIONS action, 0 = none
    user_context: np.ndarray | None = None  # (U, 3+T) context ids of each user slice (features.context_ids); None = unknown
    content: np.ndarray | None = None  # (E, M) content ids of each entry's post text (features.content_ids); None = no text

    def __len__(self) -> int:
        return len(self.user)

    def row_user(self) -> np.ndarray:
        """(E,) index of each entry's user slice."""
        return np.repeat(np.arange(len(self.starts)), self.ends - self.starts)


def _post_created(post: np.ndarray, created: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(posts, creation time) per distinct post: the time any of its rows gives, 0 = none does."""
    posts, inv = np.unique(post, return_inverse=True)
    out = np.zeros(len(posts), np.int64)
    np.maximum.at(out, inv, np.maximum(created, 0))
    return posts, out


def aggregate(table: Any, window_ms: int) -> Entries:
    """Aggregate an engagement table (see module docstring) into ``Entries``.

    A post's creation time is a property of the post: every entry of a post carries the time any of its
    log rows gives (a row without one does not make the post unknown), and 0 (unknown) when none does.
    """
    if table.num_rows == 0:
        raise ValueError("the engagement table is empty")
    post = _col(table, "post_id")
    agg = aggregate_actions(_col(table, "user_id"), post, _col(table, "author_id"), _action_index(table),
                            _col(table, "timestamp_ms"), _col(table, "product_surface", 1), _col(table, "dwell_ms", 0),
                            window_ms)
    if "post_created_at_ms" in table.column_names:
        raw = table.column("post_created_at_ms")
        created_share = 1.0 - raw.null_count / table.num_rows
        posts, created = _post_created(post, _col(table, "post_created_at_ms", 0))
    else:
        created_share, posts, created = 0.0, np.unique(post), np.zeros(len(np.unique(post)), np.int64)
    return Entries(user=agg.user, post=agg.post, author=agg.author, bits=agg.bits, ts=agg.ts, surface=agg.surface,
                   dwell_ms=agg.dwell_ms, created=created[np.searchsorted(posts, agg.post)], starts=agg.starts,
                   ends=agg.ends, created_share=created_share, durations_ms=agg.durations_ms)


USER_CONTEXT_COLUMNS = ("country_code", "language_code", "client_app_id", "topics")  # the users table's context


def user_context_ids(entries: Entries, users: Any | None, featurizer: Featurizer) -> np.ndarray | None:
    """``(U, 3+T)`` context ids of each user slice of ``entries`` from a users table (``user_id`` and any of
    ``USER_CONTEXT_COLUMNS``; a user it lacks gets zeros), built by ``Featurizer.user_contexts`` as serving builds a
    request's; None when the table holds no context column."""
    if users is None or users.num_rows == 0 or not any(c in users.column_names for c in USER_CONTEXT_COLUMNS):
        return None
    cols = {c: users.column(c).to_pylist() if c in users.column_names else None for c in USER_CONTEXT_COLUMNS}
    row_of = {int(u): i for i, u in enumerate(users.column("user_id").to_pylist())}

    def context(user: int) -> UserContext | None:
        i = row_of.get(user)
        if i is None:
            return None
        get = lambda c, d: (cols[c][i] if cols[c] is not None and cols[c][i] is not None else d)  # noqa: E731
        return UserContext(country_code=get("country_code", ""), language_code=get("language_code", ""),
                           client_app_id=int(get("client_app_id", 0)), topics=tuple(get("topics", ())))

    return featurizer.user_contexts([context(int(u)) for u in entries.user[entries.starts]])


def split_time(entries: Entries, validation_fraction: float) -> int:
    """The first validation millisecond: the newest ``validation_fraction`` of the time span is held out."""
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"train.validation_fraction must be in (0, 1), got {validation_fraction}")
    lo, hi = int(entries.ts.min()), int(entries.ts.max())
    return lo + int(np.ceil((1.0 - validation_fraction) * (hi - lo)))


@dataclass
class PostContent:
    """The content ids of every post a posts table holds text for (``features.content_ids``, as serving computes
    them from the post it hydrates); a post without a text row gets zeros (no text)."""

    post: np.ndarray  # (N,) int64 ascending
    ids: np.ndarray  # (N, M) int64

    @classmethod
    def build(cls, posts: Any | None, max_tokens: int) -> PostContent:
        if posts is None or "text" not in posts.column_names or not posts.num_rows:
            return cls(np.zeros(0, np.int64), np.zeros((0, max_tokens), np.int64))
        post, first = np.unique(_col(posts, "post_id"), return_index=True)
        texts = posts.column("text").to_pylist()
        return cls(post, np.stack([content_ids(texts[i], max_tokens) for i in first]))

    def of(self, post_ids: np.ndarray) -> np.ndarray:
        """``(...)`` post ids → ``(..., M)`` content ids."""
        post_ids = np.asarray(post_ids, np.int64)
        if not len(self.post):
            return np.zeros((*post_ids.shape, self.ids.shape[1]), np.int64)
        at = np.minimum(np.searchsorted(self.post, post_ids), len(self.post) - 1)
        return np.where((self.post[at] == post_ids)[..., None], self.ids[at], 0)


@dataclass
class PostCorpus:
    """Every known post, sorted by the time it entered the corpus (the negative-sampling and retrieval corpus).

    Two times per post. ``created`` orders the corpus and bounds which posts a query at time t may see:
    the creation time when anything gives one, else the post's first engagement. ``known_created_ms`` is
    the time the post-age *feature* uses, and it must mean the same for a post whether it is an
    example's positive or a sampled negative, or a model learns "unknown age = engaged" (a first
    engagement is no creation time either: it is defined by the labels). So it is the log's creation
    time for a post the log holds (0 = unknown, as in ``Entries.created``), and the posts table's for a
    post only the posts table holds when every log row carries a creation time (else 0: with unknown
    times among the positives, known ones only among never-engaged posts would mark the negatives).
    """

    post: np.ndarray  # (N,) int64
    author: np.ndarray  # (N,) int64
    created: np.ndarray  # (N,) int64 creation time, else first engagement; ascending
    known_created_ms: np.ndarray  # (N,) int64 the age feature's creation time, 0 = unknown
    content: np.ndarray | None = None  # (N, M) content ids of each post's text (features.content_ids); None = no text

    @classmethod
    def build(cls, entries: Entries, posts: Any | None = None) -> PostCorpus:
        """From a posts table when given (plus any post only the log holds), else from the engagements."""
        log_post, idx, inv = np.unique(entries.post, return_index=True, return_inverse=True)
        first_seen = np.full(len(log_post), np.iinfo(np.int64).max, np.int64)
        np.minimum.at(first_seen, inv, entries.ts)
        log_created = entries.created[idx]
        post, author = log_post, entries.author[idx]
        table_created = np.zeros(len(post), np.int64)
        if posts is not None and posts.num_rows:
            t_post = _col(posts, "post_id")
            extra = ~np.isin(log_post, t_post)  # in the log only
            post = np.r_[t_post, log_post[extra]]
            author = np.r_[_col(posts, "author_id"), entries.author[idx][extra]]
            table_created = np.r_[_col(posts, "created_at_ms", 0), np.zeros(int(extra.sum()), np.int64)]
        at = np.minimum(np.searchsorted(log_post, post), len(log_post) - 1)
        in_log = log_post[at] == post
        known = np.where(in_log, log_created[at], table_created if entries.created_share == 1.0 else 0)
        known_or_table = np.where(known > 0, known, table_created)
        created = np.where(known_or_table > 0, known_or_table, np.where(in_log, first_seen[at], 0))
        order = np.argsort(created, kind="stable")
        return cls(post=post[order], author=author[order], created=created[order],
                   known_created_ms=np.maximum(known[order], 0))

    def __len__(self) -> int:
        return len(self.post)

    def sample_recent(self, ref_ms: np.ndarray, max_age_ms: int, rng: np.random.Generator) -> np.ndarray:
        """One corpus index per ``ref_ms`` element, uniform over posts created in ``[ref − max_age, ref]``
        (any older post when that window is empty; −1 when no post existed yet)."""
        hi = np.searchsorted(self.created, ref_ms, side="right")
        lo = np.searchsorted(self.created, ref_ms - max_age_ms, side="left")
        lo = np.where(hi > lo, lo, 0)
        idx = lo + np.floor(rng.random(np.shape(ref_ms)) * (hi - lo)).astype(np.int64)
        return np.where(hi > 0, np.minimum(idx, hi - 1), -1)


def _cuts(first: np.ndarray, stop: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut points ``first, first+step, … < stop`` for every group → (cut, group) arrays."""
    n = np.maximum(0, -(-(stop - first) // step))  # ceil, ≥ 0
    group = np.repeat(np.arange(len(first)), n)
    within = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    return first[group] + step * within, group


def history_start(user_start: np.ndarray, cut: np.ndarray, history_len: int, trim_block: int) -> np.ndarray:
    """First history entry of cuts at entries ``cut`` of users whose first entry is ``user_start``: the context
    window serving sees (``xserve.users.history.window_start``, trimmed in blocks of ``trim_block``)."""
    return user_start + window_start(cut - user_start, history_len, trim_block)


def _history(entries: Entries, user_start: np.ndarray, cut: np.ndarray, history_len: int,
             trim_block: int) -> tuple[np.ndarray, np.ndarray]:
    start = history_start(user_start, cut, history_len, trim_block)
    return start, cut - start


@dataclass
class RankerExamples:
    """Next-engagement ranker examples (see module docstring); rows are examples."""

    entries: Entries
    corpus: PostCorpus
    hist_start: np.ndarray  # (X,) first history entry
    hist_len: np.ndarray  # (X,) valid history entries n
    pos_start: np.ndarray  # (X,) first positive entry
    pos_len: np.ndarray  # (X,) positives (≤ P)
    neg_post: np.ndarray  # (X, N) corpus index of each negative, −1 = none
    neg_ref: np.ndarray  # (X, N) entry index whose time/surface the negative borrows
    num_pos: int  # P

    @classmethod
    def build(cls, entries: Entries, corpus: PostCorpus, *, split_ms: int, validation: bool, num_pos: int,
              num_neg: int, history_len: int, max_age_ms: int, rng: np.random.Generator,
              trim_block: int = 1, impression_negatives: Any | None = None) -> RankerExamples:
        """``impression_negatives`` (an ``xserve.loop.negatives.ImpressionNegatives``): swap sampled negatives
        for posts the user was served and did not engage with, where there are some (``loop.negatives``)."""
        is_val = entries.ts >= split_ms
        # first validation entry of each user (its end if none)
        val_first = entries.starts + np.add.reduceat(~is_val, entries.starts) if len(entries) else entries.starts
        if validation:
            first, stop = val_first, entries.ends
        else:  # random phase per user so epochs see different cuts; the first entry is always history
            first = entries.starts + 1 + rng.integers(0, num_pos, len(entries.starts))
            stop = val_first
        cut, g = _cuts(first, stop, num_pos)
        hist_start, hist_len = _history(entries, entries.starts[g], cut, history_len, trim_block)
        pos_len = np.minimum(num_pos, stop[g] - cut)
        ref = cut[:, None] + np.floor(rng.random((len(cut), num_neg)) * pos_len[:, None]).astype(np.int64)
        neg = corpus.sample_recent(entries.ts[ref], max_age_ms, rng)
        if impression_negatives is not None:
            neg = impression_negatives.replace(neg, entries.user[np.minimum(cut, len(entries) - 1)], entries.ts[ref],
                                               max_age_ms, rng)
        return cls(entries, corpus, hist_start, hist_len, cut, pos_len, neg, ref, num_pos)

    def __len__(self) -> int:
        return len(self.hist_start)

    def context(self, rows: np.ndarray, featurizer: Featurizer) -> ContextBatch:
        return context_batch(self.entries, self.hist_start[rows], self.hist_len[rows], featurizer,
                             now_ms=self.entries.ts[np.minimum(self.pos_start[rows], len(self.entries) - 1)])

    def durations(self, rows: np.ndarray) -> np.ndarray:
        """Rows → ``(B, P+N, 3)`` float32 seconds of each ``DURATION_ACTIONS`` action on the positives (0 = none;
        a label only where its action happened, which ``labels`` shows)."""
        e, num_pos = self.entries, self.num_pos
        j = np.arange(num_pos)
        valid = j < self.pos_len[rows, None]  # (B, P)
        pidx = np.where(valid, self.pos_start[rows, None] + j, 0)  # (B, P)
        d = e.durations_ms if e.durations_ms is not None else np.zeros((len(e), len(DURATION_ACTIONS)), np.int64)
        pos = np.where(valid[..., None], d[pidx], 0)  # (B, P, 3)
        neg = np.zeros((len(rows), self.neg_post.shape[1], len(DURATION_ACTIONS)), np.int64)
        return (np.concatenate([pos, neg], 1) / 1000.0).astype(np.float32)

    def batch(self, rows: np.ndarray, featurizer: Featurizer) -> tuple[ContextBatch, CandidateBatch, np.ndarray, np.ndarray]:
        """Rows → (context, candidates ``(B, P+N)``, labels ``(B, P+N, A)`` float32, dwell seconds ``(B, P+N)``)."""
        e, num_pos = self.entries, self.num_pos
        j = np.arange(num_pos)
        valid = j < self.pos_len[rows, None]  # (B, P)
        pidx = np.where(valid, self.pos_start[rows, None] + j, 0)  # (B, P)
        neg = self.neg_post[rows]  # (B, N)
        nvalid = neg >= 0
        nidx = np.where(nvalid, neg, 0)
        ref = self.neg_ref[rows]
        c = self.corpus
        post = np.concatenate([np.where(valid, e.post[pidx], 0), np.where(nvalid, c.post[nidx], 0)], 1)
        author = np.concatenate([e.author[pidx], c.author[nidx]], 1)
        surface = np.concatenate([e.surface[pidx], e.surface[ref]], 1)
        ages = np.concatenate([age_buckets(e.created[pidx], e.ts[pidx], featurizer.config.age_buckets),
                               age_buckets(c.known_created_ms[nidx], e.ts[ref], featurizer.config.age_buckets)], 1)
        bits = np.concatenate([np.where(valid, e.bits[pidx], 0), np.zeros_like(neg)], 1)
        dwell = np.concatenate([np.where(valid, e.dwell_ms[pidx], 0), np.zeros_like(neg)], 1) / 1000.0
        content = None
        if e.content is not None and c.content is not None:
            content = np.concatenate([e.content[pidx], c.content[nidx]], 1)  # (B, P+N, M)
        cand = featurizer.candidates(post, author, surface, ages, content)
        return self.context(rows, featurizer), cand, multi_hot(bits), dwell.astype(np.float32)


def history_index(start: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entry index ``(B, S)`` of history slices ``[start, start+length)`` (S = longest, ≥ 1) and validity."""
    s = max(int(length.max()) if len(length) else 0, 1)
    j = np.arange(s)
    valid = j < length[:, None]  # (B, S)
    return np.where(valid, start[:, None] + j, 0), valid


def context_batch(e: Entries, start: np.ndarray, length: np.ndarray, featurizer: Featurizer,
                  now_ms: np.ndarray | None = None) -> ContextBatch:
    """History slices ``[start, start+length)`` of ``e`` (one user each) → a context batch; ``now_ms (B,)`` dates
    the negative entries' ages (None = no ages)."""
    idx, valid = history_index(start, length)
    row = np.minimum(start, len(e) - 1)
    user = e.user[row]
    bits = np.where(valid, e.bits[idx], 0)
    age = None if now_ms is None else history_age_buckets(bits, e.ts[idx], np.asarray(now_ms)[:, None],
                                                          featurizer.config.history_age_buckets)
    user_context = None
    if e.user_context is not None:
        user_context = e.user_context[np.searchsorted(e.starts, row, side="right") - 1]
    return featurizer.context(user, np.where(valid, e.post[idx], 0), e.author[idx], e.bits[idx], e.surface[idx],
                              history_age=age, user_context=user_context,
                              content=None if e.content is None else e.content[idx])


@dataclass
class TowerExamples:
    """Contrastive examples: a history and the next ``Q`` positive entries after it."""

    entries: Entries
    hist_start: np.ndarray  # (X,)
    hist_len: np.ndarray  # (X,)
    pos_idx: np.ndarray  # (X, Q) entry index of each positive, −1 = none

    @classmethod
    def build(cls, entries: Entries, *, split_ms: int, validation: bool, num_pos: int, history_len: int,
              rng: np.random.Generator, trim_block: int = 1) -> TowerExamples:
        positive = ((entries.bits & POSITIVE_MASK) != 0) & ((entries.bits & NEGATIVE_MASK) == 0)
        positive &= (entries.ts >= split_ms) if validation else (entries.ts < split_ms)
        pidx = np.flatnonzero(positive)  # ascending: grouped by user, chronological
        puser = entries.row_user()[pidx]
        # positives of each user are a contiguous run of pidx
        starts = np.searchsorted(puser, np.arange(len(entries.starts)), side="left")
        ends = np.searchsorted(puser, np.arange(len(entries.starts)), side="right")
        first = starts + (0 if validation else rng.integers(0, num_pos, len(starts)) % np.maximum(ends - starts, 1))
        first = np.minimum(first, ends)
        k, g = _cuts(first, ends, num_pos)  # k indexes pidx
        cut = pidx[k]
        hist_start, hist_len = _history(entries, entries.starts[g], cut, history_len, trim_block)
        j = np.arange(num_pos)
        q = k[:, None] + j
        pos = np.where(q < ends[g, None], pidx[np.minimum(q, len(pidx) - 1)], -1)
        keep = hist_len > 0  # the towers need some history to pool
        return cls(entries, hist_start[keep], hist_len[keep], pos[keep])

    def __len__(self) -> int:
        return len(self.hist_start)

    def context(self, rows: np.ndarray, featurizer: Featurizer) -> ContextBatch:
        first = np.maximum(self.pos_idx[rows, 0], 0)
        return context_batch(self.entries, self.hist_start[rows], self.hist_len[rows], featurizer,
                             now_ms=self.entries.ts[first])


def label_rates(entries: Entries, split_ms: int) -> np.ndarray:
    """(A,) share of training entries (before ``split_ms``) with each action (for the head's initial bias)."""
    bits = entries.bits[entries.ts < split_ms]
    return multi_hot(bits).mean(0) if len(bits) else np.zeros(len(ACTIONS), np.float32)
