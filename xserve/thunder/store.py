"""Thunder's in-memory store of recent posts, and the in-network query over it.

Follows the reference ``thunder/posts/post_store.rs`` (see
``docs/reference.md`` §5.2-5.3). Pure Python, no Ray, no clock:
every method that depends on time takes ``now_ms``.

Data structures (one ``LightPost`` object per live post, referenced, never copied):

* ``_posts``: post id -> ``LightPost`` for the posts of the authors this shard
  owns, live only (deleted and trimmed posts are removed);
* ``_originals`` / ``_secondary`` / ``_videos``: author id -> ``deque`` of that
  author's originals, replies + reposts, and video posts, sorted by
  ``(created_at_ms, post_id)``, **newest last**. Every deque entry is also in
  ``_posts`` (deletes remove eagerly), so a query never looks a candidate up;
* ``_referenced``: post id -> ``LightPost`` stub for a post that one of this
  shard's posts refers to (a reply's parent, a repost's source) and that this
  shard does not hold: another shard's post, or one not arrived yet. A stub is
  built from the :class:`~xserve.schema.PostRef` the referring post carries
  (:mod:`xserve.thunder.refs`) and holds just what the reply rule and
  repost-of-video read, so the sharded fan-out equals the unsharded answer
  while a shard holds none of the other shards' posts: memory per shard falls
  as 1/N. Other shards' creates are skipped; every delete is recorded;
* ``_deleted``: post id -> ``deleted_at_ms``, with ``_deletions`` (arrival
  order) so deletions age out after the retention window like posts do;
* ``_runs`` / ``_video_runs``: author id -> :class:`_Run`, that author's answer
  computed once, for any viewer, without exclusions or age limit (built on
  the first query that needs it, dropped when any of the author's deques
  changes). Most of a query's work does not depend on the viewer, so a query
  only checks, per author, that its viewer, exclusions and cutoff cannot
  change that answer, and falls back to the plain scan when they can;
* ``_parents_epoch`` / ``_watched``: a reply's fate depends on its parent,
  which another author's writes (a delete, a late create) or a trim can
  change; any such change to a parent id in ``_watched`` bumps the epoch, and
  a run from an older epoch re-checks its parents before it is used.

Differences from the reference, on purpose: a delete removes the post from
its deques at once, so deleted posts do not use up the per-author scan budget;
a query ignores posts older than retention even before the next ``trim``, so
answers do not depend on when the trim timer last ran; ties in
``created_at_ms`` are ordered by post id so every answer is deterministic.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from itertools import islice
from operator import attrgetter, is_, itemgetter, neg

import numpy as np

from xserve.config import ThunderConfig
from xserve.schema import (
    InNetworkRequest,
    LightPost,
    Post,
    PostCreated,
    PostDeleted,
    PostEvent,
    PostRef,
    QuotedPostDeleted,
)
from xserve.sharding import shard_for
from xserve.thunder.postings import ORIGINAL, AuthorIndex, ParentTable, PostingLists
from xserve.thunder.refs import single_video_ms

__all__ = ["ThunderStore", "light_post", "merge_newest_first"]

_CREATED = attrgetter("created_at_ms")
_POST_ID = attrgetter("post_id")
_TIME_KEY = attrgetter("created_at_ms", "post_id")


def light_post(post: Post, min_video_duration_ms: int) -> LightPost:
    """Thunder's compact record of ``post``.

    ``has_video`` follows the reference: exactly one media item, a video of at
    least ``min_video_duration_ms``.
    """
    video_ms = single_video_ms(post.media)
    has_video = video_ms is not None and video_ms >= min_video_duration_ms
    return LightPost(
        post.post_id,
        post.author_id,
        post.created_at_ms,
        post.in_reply_to_post_id,
        post.in_reply_to_user_id,
        post.repost_of_post_id,
        post.repost_of_user_id,
        post.conversation_id,
        has_video,
    )


def _stub(post_id: int, author_id: int | None, ref: PostRef, min_video_duration_ms: int) -> LightPost:
    """A post as the rules see it, from the ``ref`` a post referring to it carries (the reply and conversation
    links of the stub itself are not known and not needed)."""
    video_ms = ref.video_ms
    return LightPost(
        post_id,
        author_id or 0,
        ref.created_at_ms,
        ref.in_reply_to_post_id,
        ref.in_reply_to_user_id,
        ref.repost_of_post_id,
        None,
        None,
        video_ms is not None and video_ms >= min_video_duration_ms,
    )


def _is_reply(p: LightPost) -> bool:
    # The reference sets is_reply when any in-reply-to field is present.
    return p.in_reply_to_post_id is not None or p.in_reply_to_user_id is not None


def merge_newest_first(posts: list[LightPost], max_results: int) -> list[LightPost]:
    """``posts`` newest first (ties: larger post id first), at most ``max_results`` of them."""
    if len(posts) <= 1:
        return posts[:max_results]
    return _merge_by_time(list(map(_CREATED, posts)), posts, max_results)


def _merge_by_time(times: Sequence[int] | np.ndarray, posts: list[LightPost], max_results: int) -> list[LightPost]:
    """:func:`merge_newest_first` given ``times[i] == posts[i].created_at_ms``.

    Sorts keys in numpy and gathers the posts once (no Python-level comparison
    of posts, no per-post tuples): pre-selects the newest ``max_results`` when
    there are many more, then a stable argsort by time; the post ids are
    read only when two kept posts share a millisecond.
    """
    n = len(posts)
    if n <= 1:
        return posts[:max_results]
    keys = np.array(times, dtype=np.int64)
    np.negative(keys, out=keys)  # ascending keys = newest first
    if n > 2 * max_results:
        floor = np.partition(keys, max_results - 1)[max_results - 1]
        keep = np.flatnonzero(keys <= floor)
        posts = list(map(posts.__getitem__, keep.tolist()))
        keys = keys[keep]
    order = np.argsort(keys, kind="stable")
    ranked = keys[order[: max_results + 1]]
    if (ranked[1:] == ranked[:-1]).any():  # a tie among the kept posts or at the boundary
        ids = np.fromiter(map(_POST_ID, posts), dtype=np.int64, count=len(posts))
        order = np.lexsort((-ids, keys))
    return list(map(posts.__getitem__, order[:max_results].tolist()))


def _gather_newest(
    times: array[int], runs: list[tuple[LightPost, ...]], rest: list[LightPost], max_results: int
) -> list[LightPost]:
    """The newest ``max_results`` of the posts in ``runs`` then ``rest``, ``times`` being theirs in that order.

    Each run is newest first, so the posts at or above the ``max_results``-th
    newest time are a prefix of it: only those are gathered (a post object is
    touched only if it may be returned), then merged by :func:`_merge_by_time`.
    """
    keys = np.frombuffer(times, dtype=np.int64) if len(times) else np.zeros(0, dtype=np.int64)
    if len(keys) <= max_results:
        return _merge_by_time(keys, [p for run in runs for p in run] + rest, max_results)
    floor = np.partition(keys, len(keys) - max_results)[len(keys) - max_results]
    lengths = np.fromiter(map(len, runs), dtype=np.int64, count=len(runs))
    starts = np.zeros(len(runs), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    young = keys >= floor
    tail = int(lengths.sum())  # where ``rest`` starts
    counts = np.add.reduceat(young[:tail], starts).tolist() if runs else []
    out: list[LightPost] = []
    add = out.extend
    for run, c in zip(runs, counts):
        if c == len(run):
            add(run)
        elif c:
            add(run[:c])
    if rest:
        out.extend(map(rest.__getitem__, np.flatnonzero(young[tail:]).tolist()))
    return _merge_by_time(keys[young], out, max_results)


def _replies_kept(
    cols: PostingLists, slots: np.ndarray, ok: np.ndarray, cutoff: int, followed: Sequence[int]
) -> None:
    """Clear ``ok`` for the entries at ``slots`` of the reply lists ``cols`` that the reply rule drops.

    Vectorised over the reply columns and the :class:`ParentTable`, no post
    touched: (a) the parent is held (live, at or after ``cutoff``) and is an
    original; or (b) it is held, it replies to the reply's conversation root
    (``parent.in_reply_to_post_id == reply.conversation_id``) and the reply is
    addressed to someone followed (only these few look up a Python set).
    ``_collect`` applies the same rule post by post.
    """
    parent_col, conv_col, user_col = cols.reply_columns()
    handles = parent_col[slots]
    replies = np.flatnonzero(ok & (handles >= 0))  # entries still in the running that name a parent
    if not len(replies):
        return
    h = handles[replies]
    record = cols.parents.columns()[h]  # type: ignore[union-attr]  # (n, 2): time, link
    held = record[:, 0] >= cutoff  # an absent parent's time is older than any cutoff
    link = record[:, 1]
    keep = held & (link == ORIGINAL)
    maybe = np.flatnonzero(held & ~keep)  # held, not an original: rule (b)
    if len(maybe):
        at = slots[replies[maybe]]
        root = np.flatnonzero(conv_col[at] == link[maybe])  # a missing conversation (or link) matches nothing
        if len(root):
            followed_set = frozenset(followed)
            users = user_col[at[root]].tolist()
            addressed = np.fromiter(map(followed_set.__contains__, users), dtype=bool, count=len(users))
            keep[maybe[root[addressed]]] = True
    ok[replies] = keep


def _first_per_list(mask: np.ndarray, first: np.ndarray, taken: np.ndarray, cap: int) -> np.ndarray:
    """``mask`` limited to the first ``cap`` True entries of each list (lists at ``first``, ``taken`` long)."""
    counts = np.cumsum(mask, dtype=np.int64)
    before = counts[first - 1]
    before[first == 0] = 0
    return mask & (counts - mask - np.repeat(before, taken) < cap)


def _floor_of(times: list[np.ndarray], max_results: int) -> int:
    """The ``max_results``-th largest of all ``times`` (the smallest int64 when there are fewer)."""
    total = sum(map(len, times))
    if total < max_results:
        return -(2**63)
    keys = np.concatenate(times)
    return int(np.partition(keys, total - max_results)[total - max_results])


def _merge_columns(parts: list[tuple[PostingLists, np.ndarray, np.ndarray]], extra: list[LightPost], max_results: int) -> list[LightPost]:
    """The entries ``parts`` kept (``(cols, slots, times)`` each) and the posts ``extra``, newest first (ties: larger
    id), the first ``max_results``. Post ids are read only when two of the entries that can be returned share a
    millisecond, and only the returned entries are turned into posts (each a cache miss: the costliest step)."""
    times = [t for _, _, t in parts]
    if extra:
        times.append(np.fromiter(map(_CREATED, extra), np.int64, len(extra)))
    sizes = np.fromiter(map(len, times), np.int64, len(times))
    keys = np.concatenate(times)
    np.negative(keys, out=keys)  # ascending keys: newest first
    n = len(keys)
    if n > max_results:
        floor = np.partition(keys, max_results - 1)[max_results - 1]
        chosen = np.flatnonzero(keys <= floor)  # the answer and the entries tied with its oldest
    else:
        chosen = np.arange(n)
    starts = np.zeros(len(sizes), dtype=np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    source = np.searchsorted(starts, chosen, side="right") - 1  # which part (len(parts): extra) each is from
    at = chosen - starts[source]  # where in it
    keys = keys[chosen]
    order = np.argsort(keys)  # any order of tied keys: ties are settled by id below
    ranked = keys[order[: max_results + 1]]
    if (ranked[1:] == ranked[:-1]).any():  # a tie among the returned entries or at the cut: larger id first
        pid = np.empty(len(chosen), dtype=np.int64)
        for k in range(len(sizes)):
            mine = np.flatnonzero(source == k)
            if k < len(parts):
                cols, slots, _ = parts[k]
                pid[mine] = np.frombuffer(cols.pid, dtype=np.int64)[slots[at[mine]]]
            else:
                pid[mine] = np.fromiter(map(_POST_ID, map(extra.__getitem__, at[mine].tolist())), np.int64, len(mine))
        order = np.lexsort((-pid, keys))
    order = order[:max_results]
    source, at = source[order], at[order]
    if len(sizes) == 1 and not extra:
        cols, slots, _ = parts[0]
        return cols.obj[slots[at]].tolist()
    out = np.empty(len(order), dtype=object)
    for k, (cols, slots, _) in enumerate(parts):
        mine = source == k
        out[mine] = cols.obj[slots[at[mine]]]  # object array to object array: pointers copied, nothing converted
    if extra:
        mine = np.flatnonzero(source == len(parts))
        out[mine] = np.fromiter(map(extra.__getitem__, at[mine].tolist()), dtype=object, count=len(mine))
    return out.tolist()


def _scan_window(d: deque[LightPost], scan: int, exclude: frozenset[int], cutoff: int) -> Iterable[LightPost]:
    """Newest-first posts of ``d`` within retention, excluded ones skipped, at most ``scan`` of them."""
    n = 0
    for p in reversed(d):
        if p.created_at_ms < cutoff or n >= scan:
            return
        if p.post_id not in exclude:
            n += 1
            yield p


class _Run:
    """One author's precomputed query answer, valid until that author's deques change.

    Built from the deques with everything a query cannot change fixed: no
    exclusions, no age limit, a viewer who follows nobody and whose posts
    nobody reposted. ``times``/``posts`` are the posts that pass then (the
    author's originals and replies + reposts, or videos), newest first.
    A query takes them as they are (or the prefix young enough, by bisect)
    after checking that its own parameters cannot change them:

    * ``scanned``: how many newest posts of each deque the answer depends on
      (the scan up to the cap-th kept post); none of them may be excluded;
    * ``repost_users``: users the kept reposts repost: the viewer must not be one;
    * ``cond_users``: addressees of replies kept only for a viewer following
      them (reply rule (b)): the viewer must follow none of them;
    * ``parent_ids``/``parents``: the parent each scanned reply found
      (:meth:`ThunderStore.get`, ``None`` = absent); the tables must
      still hold exactly those objects, since a parent can be deleted or
      arrive late without the replying author's deques changing;
    * ``parents_from``: the oldest parent time of the kept replies; the
      query's retention cutoff must not exceed it (else a kept reply's parent
      is too old); ``valid_from`` is the oldest of that and the kept posts'
      times: at or below it every kept post is taken as is.
    """

    __slots__ = (
        "times",
        "posts",
        "parents_from",
        "valid_from",
        "scanned",
        "repost_users",
        "cond_users",
        "parent_ids",
        "parents",
        "epoch",
    )

    def __init__(
        self,
        times: bytes,
        posts: tuple[LightPost, ...],
        parents_from: int,
        valid_from: int,
        scanned: tuple[int, ...],
        repost_users: tuple[int, ...],
        cond_users: tuple[int, ...],
        parent_ids: tuple[int, ...],
        parents: tuple[LightPost | None, ...],
        epoch: int,
    ) -> None:
        self.times = times  # int64 created_at_ms of ``posts``, native byte order (appended to the query's array as is)
        self.posts = posts
        self.parents_from = parents_from
        self.valid_from = valid_from
        self.scanned = scanned
        self.repost_users = repost_users
        self.cond_users = cond_users
        self.parent_ids = parent_ids
        self.parents = parents
        self.epoch = epoch  # the parents epoch at which ``parents`` were last seen in the tables


_EMPTY: frozenset[int] = frozenset()  # followed_set of a video query (no reply rule)
_NO_PARENT = 1 << 62  # "parent time" of a post that is not a reply: never too old


class ThunderStore:
    """Recent posts of the authors one shard owns, plus stubs of the posts they refer to.

    ``shard``/``num_shards``: this store keeps deques for authors with
    ``shard_for(author_id, num_shards) == shard``; with the default ``(0, 1)``
    it is the whole, unsharded store. Feed every store the full event stream
    (it skips other shards' creates, and records every delete).
    Not thread-safe: one owner (an actor) calls it.
    """

    def __init__(self, config: ThunderConfig, shard: int = 0, num_shards: int = 1) -> None:
        if num_shards < 1 or not 0 <= shard < num_shards:
            raise ValueError(f"shard must be in [0, num_shards), got shard={shard} num_shards={num_shards}")
        for name in (
            "retention_ms",
            "max_original_posts_per_author",
            "max_reply_posts_per_author",
            "max_video_posts_per_author",
            "max_tiny_posts_per_user_scan",
            "max_posts_per_author_list",
            "max_input_list_size",
        ):
            if getattr(config, name) < 1:
                raise ValueError(f"ThunderConfig.{name} must be >= 1, got {getattr(config, name)}")
        self.config = config
        self.shard = shard
        self.num_shards = num_shards
        self._retention = config.retention_ms
        self._posts: dict[int, LightPost] = {}
        self._originals: dict[int, deque[LightPost]] = {}
        self._secondary: dict[int, deque[LightPost]] = {}
        self._videos: dict[int, deque[LightPost]] = {}
        # The same lists as columns, kept in step with the deques: what the query reads (xserve/thunder/postings.py).
        # A reply's parent as the rule reads it, one entry per parent, refreshed whenever a post enters or leaves
        # _posts / _referenced: the query decides the reply rule with numpy from it.
        self._parents = ParentTable(self.get)
        # Every author's row in each of the three kinds of lists: one vectorised lookup per query finds them all.
        self._authors = AuthorIndex(3)
        self._cols = {
            "_originals": PostingLists(None, self._authors, 0),
            "_secondary": PostingLists(self._parents, self._authors, 1),
            "_videos": PostingLists(None, self._authors, 2),
        }
        self._referenced: dict[int, LightPost] = {}  # stubs of posts ours refer to that we do not hold
        self._deleted: dict[int, int] = {}
        self._deletions: deque[tuple[int, int]] = deque()
        self._runs: dict[int, _Run] = {}  # author -> cached answer from originals + replies/reposts
        self._video_runs: dict[int, _Run] = {}  # author -> cached answer from videos
        self._parents_epoch = 0  # bumped when a post in _watched enters or leaves the tables
        self._watched: set[int] = set()  # parent ids the runs checked at the current epoch depend on
        self._trim_cutoff = -(2**63)  # the latest trim's cutoff: older creates are stale even at an earlier now
        self._peak: dict[str, int] = {}  # dict sizes at their largest since the last shrink
        self.counters: Counter[str] = Counter()

    def __repr__(self) -> str:
        return (
            f"ThunderStore(shard={self.shard}/{self.num_shards}, posts={len(self._posts)}, "
            f"retention_ms={self._retention})"
        )

    def owns(self, author_id: int) -> bool:
        return self.num_shards == 1 or shard_for(author_id, self.num_shards) == self.shard

    def get(self, post_id: int) -> LightPost | None:
        """A live post by id: this shard's own, or the stub of one its posts refer to."""
        return self._posts.get(post_id) or self._referenced.get(post_id)

    # ------------------------------------------------------------------ writes

    def apply(self, events: Iterable[PostEvent], now_ms: int) -> Counter[str]:
        """Apply one batch of events; returns what happened to them (also added to ``counters``).

        Creates older than retention (or than the latest trim's cutoff) or newer than ``now_ms`` are dropped;
        deletes are always recorded (they age out in :meth:`trim`) and applied first, then creates in time order, so a batch that
        both creates and deletes a post leaves it deleted whatever the order;
        a create of a deleted id or of a post already held is skipped.
        """
        # Once trimmed to a cutoff, a post (or a stub) older than it is stale even if this batch's now is
        # earlier: else the answer would depend on whether the trim ran first.
        cutoff = max(now_ms - self._retention, self._trim_cutoff)
        outcome: Counter[str] = Counter()
        creates: list[Post] = []
        future = stale = 0
        for event in events:
            match event:
                case PostCreated(post=post):
                    t = post.created_at_ms
                    if t > now_ms:
                        future += 1
                    elif t < cutoff:
                        stale += 1
                    else:
                        creates.append(post)
                case PostDeleted(post_id=pid, deleted_at_ms=t):
                    outcome[self._delete(pid, t)] += 1
                case QuotedPostDeleted(quoting_post_id=pid, deleted_at_ms=t):
                    outcome[self._delete(pid, t)] += 1
                case _:
                    raise TypeError(f"not a post event: {type(event).__name__}")
        creates.sort(key=_POST_ID)
        creates.sort(key=_CREATED)
        outcome["dropped_future"] += future
        outcome["dropped_stale"] += stale
        outcome.update(self._insert_sorted(creates, cutoff))
        self.counters.update(outcome)
        return +outcome

    def _delete(self, post_id: int, deleted_at_ms: int) -> str:
        # Even a delete older than retention is recorded until the next trim:
        # replaying a log, it may precede a (bogus, later-dated) create of the
        # same id that the live store had blocked; honouring it is always safe.
        if post_id in self._deleted:
            return "duplicates"
        self._deleted[post_id] = deleted_at_ms
        self._deletions.append((deleted_at_ms, post_id))
        if post_id in self._watched:
            self._parents_changed()
        self._referenced.pop(post_id, None)
        p = self._posts.pop(post_id, None)
        self._parents.refresh(post_id)
        if p is None:
            return "deleted"
        a = p.author_id
        self._forget_runs(a)
        for name in ("_originals", "_secondary", "_videos"):
            by_author = getattr(self, name)
            d = by_author.get(a)
            if d is not None and p in d:
                i = d.index(p)
                del d[i]
                self._cols[name].remove(a, i)
                if not d:
                    del by_author[a]
        return "deleted"

    def _insert_sorted(self, creates: list[Post], cutoff: int) -> Counter[str]:
        # The ingest hot loop: locals, no per-event method calls on the common path.
        outcome: Counter[str] = Counter()
        posts, referenced, deleted = self._posts, self._referenced, self._deleted
        originals, secondary = self._originals, self._secondary
        min_video = self.config.min_video_duration_ms
        list_cap = self.config.max_posts_per_author_list
        sharded = self.num_shards > 1
        runs_pop, video_runs_pop = self._runs.pop, self._video_runs.pop
        watched = self._watched
        cols = self._cols
        parents_refresh, parent_handles = self._parents.refresh, self._parents.handles
        n_created = n_other = n_dup = n_del = 0
        for post in creates:
            pid = post.post_id
            if pid in deleted:
                n_del += 1
                continue
            if sharded and shard_for(post.author_id, self.num_shards) != self.shard:
                n_other += 1  # another shard's: our posts that refer to it carry what the rules need of it
                continue
            if pid in posts:
                n_dup += 1
                continue
            lp = posts[pid] = light_post(post, min_video)
            n_created += 1
            if pid in watched:  # a late parent of a cached reply (its stub, if any, is replaced)
                self._parents_changed()
                watched = self._watched
            if referenced and pid in referenced:
                del referenced[pid]
            if pid in parent_handles:  # a late parent of replies held
                parents_refresh(pid)
            if post.reply_parent is not None or post.repost_source is not None:
                self._refer(post, cutoff)
                watched = self._watched
            a = lp.author_id
            runs_pop(a, None)
            video_runs_pop(a, None)
            reply = lp.in_reply_to_post_id is not None or lp.in_reply_to_user_id is not None
            repost = lp.repost_of_post_id is not None
            name = "_secondary" if reply or repost else "_originals"
            by_author = secondary if reply or repost else originals
            d = by_author.get(a)
            if d is None:
                by_author[a] = deque((lp,))
                cols[name].append(a, lp)
            elif len(d) < list_cap and (d[-1].created_at_ms < lp.created_at_ms or _TIME_KEY(d[-1]) < _TIME_KEY(lp)):
                d.append(lp)
                cols[name].append(a, lp)
            else:
                self._push(name, lp, True)
            if reply:  # replies never go to the video deque
                continue
            video = lp.has_video
            if not video and repost:
                source = posts.get(lp.repost_of_post_id) or referenced.get(lp.repost_of_post_id)  # type: ignore[arg-type]
                video = source is not None and source.has_video and not _is_reply(source)
            if video:
                self._push("_videos", lp, False)
        outcome["created"] = n_created
        outcome["skipped_other_shards"] = n_other
        outcome["duplicates"] = n_dup
        outcome["skipped_deleted"] = n_del
        return outcome

    def _refer(self, post: Post, cutoff: int) -> None:
        """Keep a stub of the posts ``post`` refers to, from the refs it carries, unless we hold the post
        itself (or a stub), it is deleted, or it is past retention (no reply to it would be kept)."""
        for pid, author, ref in (
            (post.in_reply_to_post_id, post.in_reply_to_user_id, post.reply_parent),
            (post.repost_of_post_id, post.repost_of_user_id, post.repost_source),
        ):
            if ref is None or pid is None or ref.created_at_ms < cutoff:
                continue
            if pid in self._posts or pid in self._referenced or pid in self._deleted:
                continue
            self._referenced[pid] = _stub(pid, author, ref, self.config.min_video_duration_ms)
            self._parents.refresh(pid)
            if pid in self._watched:  # a cached reply found no parent before
                self._parents_changed()

    def _push(self, name: str, lp: LightPost, owns_table: bool) -> None:
        """Append ``lp`` to its author's list ``name``: evict the oldest beyond the list cap, keep time order."""
        a = lp.author_id
        by_author, cols = getattr(self, name), self._cols[name]
        d = by_author.get(a)
        if d is None:
            d = by_author[a] = deque()
        while len(d) >= self.config.max_posts_per_author_list:
            old = d.popleft()
            cols.pop_oldest(a, 1)
            if owns_table:  # evicted for good: out of the table and the video deque too
                self._posts.pop(old.post_id, None)
                self._parents.refresh(old.post_id)
                if old.post_id in self._watched:
                    self._parents_changed()
                v = self._videos.get(a)
                if v is not None and old in v:
                    i = v.index(old)
                    del v[i]
                    self._cols["_videos"].remove(a, i)
                    if not v:
                        del self._videos[a]
        if d and _TIME_KEY(d[-1]) > _TIME_KEY(lp):  # a late event
            i = bisect_right(d, _TIME_KEY(lp), key=_TIME_KEY)
            d.insert(i, lp)
            cols.insert(a, i, lp)
        else:
            d.append(lp)
            cols.append(a, lp)

    def trim(self, now_ms: int) -> int:
        """Drop everything older than retention; returns how many posts left the store.

        Pops from the front of each deque, drops empty authors, ages out
        deletions, and rebuilds a dict once it holds under half its peak size
        (CPython dicts never shrink on delete).
        """
        cutoff = now_ms - self._retention
        self._trim_cutoff = max(self._trim_cutoff, cutoff)
        removed = 0
        parent_handles, parents_refresh = self._parents.handles, self._parents.refresh
        for name, owns_table in (("_originals", True), ("_secondary", True), ("_videos", False)):
            by_author, cols = getattr(self, name), self._cols[name]
            empty = []
            for a, d in by_author.items():
                if d and d[0].created_at_ms >= cutoff:
                    continue
                self._forget_runs(a)
                n = 0
                while d and d[0].created_at_ms < cutoff:
                    p = d.popleft()
                    n += 1
                    if owns_table:
                        del self._posts[p.post_id]
                        if p.post_id in parent_handles:
                            parents_refresh(p.post_id)
                        removed += 1
                if n:
                    cols.pop_oldest(a, n)
                if not d:
                    empty.append(a)
            for a in empty:
                del by_author[a]
        # Stubs arrive in the order of the posts referring to them, not their own time: scan them all.
        stale = [pid for pid, p in self._referenced.items() if p.created_at_ms < cutoff]
        for pid in stale:
            del self._referenced[pid]
            self._parents.refresh(pid)
        self._parents.collect(self._cols["_secondary"].parents_in_use())  # parents no held reply names any more
        deletions = self._deletions
        while deletions and deletions[0][0] < cutoff:
            t, pid = deletions.popleft()
            if self._deleted.get(pid) == t:
                del self._deleted[pid]
        self._parents_changed()  # posts (maybe parents) left the tables: every run re-checks its parents once
        self._shrink()
        self.counters["trimmed"] += removed
        return removed

    def _shrink(self) -> None:
        for name in ("_posts", "_referenced", "_deleted", "_originals", "_secondary", "_videos", "_runs", "_video_runs"):
            d = getattr(self, name)
            peak = max(self._peak.get(name, 0), len(d))
            if len(d) < peak // 2:
                setattr(self, name, dict(d))
                peak = len(d)
            self._peak[name] = peak

    # ------------------------------------------------------------------ reads

    def in_network_posts(self, req: InNetworkRequest, now_ms: int) -> list[LightPost]:
        """Recent posts of ``req.followed_ids`` for ``req.viewer_id``, newest first.

        Per followed author (first ``max_input_list_size`` of them): newest-first
        scan of at most ``max_tiny_posts_per_user_scan`` posts not in
        ``exclude_ids``; drop reposts of the viewer's own posts; keep a reply
        only under the reply rule (see :meth:`_collect`); at most
        ``max_original_posts_per_author`` originals and
        ``max_reply_posts_per_author`` replies + reposts (or
        ``max_video_posts_per_author`` videos when ``video_only``). Then merge,
        newest first, and keep ``max_results`` (config default when <= 0).

        Each author's answer comes from its cached :class:`_Run` when the
        request cannot change it, else from the plain scan (:meth:`_collect`).
        """
        cfg = self.config
        limit = cfg.max_input_list_size
        followed: Sequence[int] = req.followed_ids
        if len(followed) > limit:
            followed = followed[:limit]
        exclude = req.exclude_ids
        if len(exclude) > limit:  # a set has no "first N": keep the smallest ids, deterministic
            exclude = frozenset(sorted(exclude)[:limit])
        cutoff = now_ms - self._retention
        viewer = req.viewer_id
        if req.video_only:
            max_results = req.max_results if req.max_results > 0 else cfg.max_videos_to_return
            kinds = ((self._videos, cfg.max_video_posts_per_author, False),)
        else:
            max_results = req.max_results if req.max_results > 0 else cfg.max_posts_to_return
            kinds = (
                (self._originals, cfg.max_original_posts_per_author, False),
                (self._secondary, cfg.max_reply_posts_per_author, True),
            )
        if not cfg.query_cache:
            names = ("_videos",) if req.video_only else ("_originals", "_secondary")
            lists = [(self._cols[n], by_author, cap, rule) for n, (by_author, cap, rule) in zip(names, kinds)]
            return self._from_columns(lists, followed, exclude, viewer, cutoff, max_results)
        runs, followed_set = (self._video_runs, _EMPTY) if req.video_only else (self._runs, frozenset(followed))
        times = array("q")
        runs_hit: list[tuple[LightPost, ...]] = []
        slow = self._from_runs(runs, kinds, followed, followed_set, exclude, viewer, cutoff, times, runs_hit)
        slow_posts: list[LightPost] = []
        for by_author, cap, rule in kinds if slow else ():
            self._collect(by_author, slow, cap, exclude, viewer, cutoff, cutoff, followed_set if rule else None, slow_posts)
        times.extend(map(_CREATED, slow_posts))
        return _gather_newest(times, runs_hit, slow_posts, max_results)

    def _from_columns(
        self,
        lists: list[tuple[PostingLists, dict[int, deque[LightPost]], int, bool]],
        followed: Sequence[int],
        exclude: frozenset[int],
        viewer: int,
        cutoff: int,
        max_results: int,
    ) -> list[LightPost]:
        """The query over the posting-list columns: the same answer as :meth:`_collect` for every author, merged.

        Per kind of list, gather each followed author's newest ``cap + cap // 2``
        entries (``cap`` for originals without exclusions; at most the scan cap,
        so the scan limit cannot bind inside them), drop the old, the excluded,
        reposts of the viewer and the replies the rule drops
        (:func:`_replies_kept`), all with numpy, and keep each author's first
        ``cap``. The ``max_results``-th newest time of what is kept (``floor``)
        bounds the true one from below (the kept entries are a subset of the
        true answer). An author whose gathered entries kept fewer than ``cap``
        while older entries at or above ``floor`` (and within retention) were
        left ungathered is answered by :meth:`_collect` itself. Then one merge,
        newest first, stops at ``max_results``.
        """
        scan = self.config.max_tiny_posts_per_user_scan
        originals = self._cols["_originals"]
        excluded = np.fromiter(exclude, dtype=np.int64, count=len(exclude)) if exclude else None
        try:
            ids = np.fromiter(followed, dtype=np.int64, count=len(followed))
        except OverflowError:  # an id beyond int64 is no author's: -2 is no key of the index
            ids = np.fromiter((a if -(2**63) <= a < 2**63 else -2 for a in followed), dtype=np.int64, count=len(followed))
        found = self._authors.find(ids)
        gathered = []
        for cols, by_author, cap, rule in lists:
            if not cols.rows:
                continue
            # Originals are never reposts or replies: without exclusions their newest ``cap`` within retention
            # are the answer (nothing to cap, no author left to scan deeper).
            plain = cols is originals and excluded is None
            slack = 0 if plain else cap // 2
            rows = self._authors.rows_of(cols.kind, found)
            slots, first, taken, length, which = cols.newest(followed, min(scan, cap + slack), rows)
            if not len(slots):
                continue
            t = np.frombuffer(cols.time, dtype=np.int64)[slots]
            ok = t >= cutoff
            if excluded is not None:
                ok &= ~np.isin(np.frombuffer(cols.pid, dtype=np.int64)[slots], excluded)
            if cols is not originals:
                ok &= np.frombuffer(cols.repost_user, dtype=np.int64)[slots] != viewer
            if rule:
                _replies_kept(cols, slots, ok, cutoff, followed)
            kept = ok if plain else _first_per_list(ok, first, taken, cap)
            gathered.append((cols, by_author, cap, rule, slots, first, taken, length, which, t, kept, plain, t[kept]))
        if not gathered:
            return []
        floor = _floor_of([g[-1] for g in gathered], max_results)
        extra: list[LightPost] = []
        parts = []
        for cols, by_author, cap, rule, slots, first, taken, length, which, t, kept, plain, t_kept in gathered:
            if plain:
                if len(t_kept):
                    parts.append((cols, slots[kept], t_kept))
                continue
            oldest = t[first + taken - 1]
            deep = (np.add.reduceat(kept, first) < cap) & (taken < length) & (oldest >= cutoff) & (oldest >= floor)
            if deep.any():
                authors = [followed[k] for k in which[deep].tolist()]
                for f, n in zip(first[deep].tolist(), taken[deep].tolist()):
                    kept[f : f + n] = False
                self.counters["query_fallback_authors"] += len(authors)  # answered by the per-post scan
                self._collect(by_author, authors, cap, exclude, viewer, cutoff, max(cutoff, floor),
                              frozenset(followed) if rule else None, extra)
                t_kept = t[kept]
            if len(t_kept):
                parts.append((cols, slots[kept], t_kept))
        return _merge_columns(parts, extra, max_results) if parts or extra else []

    def _from_runs(
        self,
        runs: dict[int, _Run],
        kinds: tuple[tuple[dict[int, deque[LightPost]], int, bool], ...],
        followed: Sequence[int],
        followed_set: frozenset[int],
        exclude: frozenset[int],
        viewer: int,
        cutoff: int,
        times: array[int],
        runs_hit: list[tuple[LightPost, ...]],
    ) -> list[int]:
        """Add each followed author's cached answer: its times to ``times``, its posts to ``runs_hit``.

        Returns the authors whose cached answer this request could change. The
        query's hot loop: per author a handful of C-level checks (see
        :class:`_Run` for why each one is needed), no post is touched.
        """
        get = runs.get
        add_times, add_run = times.frombytes, runs_hit.append
        epoch = self._parents_epoch
        slow: list[int] = []
        for a in followed:
            r = get(a)
            if r is None:
                if not any(a in by_author for by_author, _, _ in kinds):
                    continue  # no posts
                r = runs[a] = self._build_run(a, kinds)
            elif r.epoch != epoch and not self._parents_unchanged(r):
                r = runs[a] = self._build_run(a, kinds)
            if (
                viewer in r.repost_users
                or (r.cond_users and not followed_set.isdisjoint(r.cond_users))
                or (exclude and self._excludes_scanned(a, kinds, r.scanned, exclude))
            ):
                slow.append(a)
            elif cutoff <= r.valid_from:
                if r.posts:
                    add_times(r.times)
                    add_run(r.posts)
            else:  # some posts (or their parents) are past retention: the young enough prefix, if parents allow
                k = bisect_right(memoryview(r.times).cast("q"), -cutoff, key=neg)
                if k and r.parents_from < cutoff:
                    slow.append(a)
                elif k:
                    add_times(r.times[: 8 * k])
                    add_run(r.posts[:k])
        return slow

    @staticmethod
    def _excludes_scanned(
        a: int, kinds: tuple[tuple[dict[int, deque[LightPost]], int, bool], ...], scanned: tuple[int, ...], exclude: frozenset[int]
    ) -> bool:
        for (by_author, _, _), n in zip(kinds, scanned):
            if n and not exclude.isdisjoint(map(_POST_ID, islice(reversed(by_author[a]), n))):
                return True
        return False

    def _build_run(self, a: int, kinds: tuple[tuple[dict[int, deque[LightPost]], int, bool], ...]) -> _Run:
        """Author ``a``'s :class:`_Run`: :meth:`_collect`'s scan with no exclusions, age limit or viewer."""
        scan = self.config.max_tiny_posts_per_user_scan
        get = self.get
        kept: list[tuple[int, int, LightPost]] = []  # (time, parent time, post)
        scanned: list[int] = []
        repost_users: set[int] = set()
        cond_users: set[int] = set()
        parent_ids: list[int] = []
        parents: list[LightPost | None] = []
        for by_author, cap, rule in kinds:
            d = by_author.get(a)
            if not d:
                scanned.append(0)
                continue
            if not rule:  # no reply rule: every scanned post is kept, so the newest ``cap`` are the answer
                window = list(islice(reversed(d), min(cap, scan)))
                kept += [(p.created_at_ms, _NO_PARENT, p) for p in window]
                repost_users.update([p.repost_of_user_id for p in window if p.repost_of_post_id is not None])
                scanned.append(len(window))
                continue
            n = taken = 0
            for p in islice(reversed(d), scan):
                n += 1
                parent_time = _NO_PARENT
                parent_id = p.in_reply_to_post_id
                if parent_id is not None:
                    parent = get(parent_id)
                    parent_ids.append(parent_id)
                    parents.append(parent)
                    if parent is None:
                        continue
                    if (
                        parent.in_reply_to_post_id is not None
                        or parent.in_reply_to_user_id is not None
                        or parent.repost_of_post_id is not None
                    ):
                        if p.conversation_id is not None and parent.in_reply_to_post_id == p.conversation_id:
                            cond_users.add(p.in_reply_to_user_id)  # type: ignore[arg-type]
                        continue
                    parent_time = parent.created_at_ms
                if p.repost_of_post_id is not None:
                    repost_users.add(p.repost_of_user_id)  # type: ignore[arg-type]
                kept.append((p.created_at_ms, parent_time, p))
                taken += 1
                if taken >= cap:
                    break
            scanned.append(n)
        kept.sort(key=itemgetter(0), reverse=True)
        self._watched.update(parent_ids)
        times, parent_times, posts = zip(*kept) if kept else ((), (), ())
        parents_from = min(parent_times, default=_NO_PARENT)
        return _Run(
            array("q", times).tobytes(),
            posts,
            parents_from,
            min(times[-1], parents_from) if kept else _NO_PARENT,
            tuple(scanned),
            tuple(repost_users),  # a few at most: tuples are a quarter the size of small frozensets
            tuple(cond_users),
            tuple(parent_ids),
            tuple(parents),
            self._parents_epoch,
        )

    def _parents_changed(self) -> None:
        self._parents_epoch += 1
        self._watched = set()

    def _parents_unchanged(self, r: _Run) -> bool:
        """Re-check ``r``'s parents after an epoch change; if they hold, ``r`` is current again."""
        get = self.get
        if not all(map(is_, map(get, r.parent_ids), r.parents)):
            return False
        self._watched.update(r.parent_ids)
        r.epoch = self._parents_epoch
        return True

    def _forget_runs(self, a: int) -> None:
        """Author ``a``'s deques changed: its cached answers are stale."""
        self._runs.pop(a, None)
        self._video_runs.pop(a, None)

    def _collect(
        self,
        by_author: dict[int, deque[LightPost]],
        followed: Sequence[int],
        cap: int,
        exclude: frozenset[int],
        viewer_id: int,
        cutoff: int,
        floor: int,
        followed_set: frozenset[int] | None,
        out: list[LightPost],
    ) -> None:
        """The reference's per-author scan; ``followed_set`` given = apply the reply rule.

        ``cutoff`` is the retention limit (for parents too); posts older than
        ``floor`` (>= cutoff) are not collected because they cannot make the answer.

        The rules are inlined (this is the query's hot loop); the oracle in
        ``tests/thunder/factories.py`` states them plainly and the tests hold
        this loop to it. Reply rule (``docs/reference.md`` §5.3): keep a reply if its
        parent is in the store (live, within retention) and is an original; or
        if the parent is itself a reply directly to the conversation root
        (``parent.in_reply_to_post_id == reply.conversation_id``) and the reply
        is addressed to someone the viewer follows.
        """
        scan = self.config.max_tiny_posts_per_user_scan
        get = by_author.get
        posts_get, referenced_get = self._posts.get, self._referenced.get
        append = out.append
        for a in followed:
            d = get(a)
            if d is None or d[-1].created_at_ms < floor:
                continue
            k = len(d) if len(d) < scan else scan
            if d[-k].created_at_ms < floor:  # only the newest k are new enough
                k = len(d) - bisect_left(d, floor, key=_CREATED)
            if not exclude or exclude.isdisjoint(map(_POST_ID, islice(reversed(d), k))):
                window: Iterable[LightPost] = islice(reversed(d), k)  # nothing old or excluded in the scan window
            else:
                window = _scan_window(d, scan, exclude, floor)
            taken = 0
            for p in window:
                if p.repost_of_user_id == viewer_id and p.repost_of_post_id is not None:
                    continue
                parent_id = p.in_reply_to_post_id
                if parent_id is not None and followed_set is not None:
                    parent = posts_get(parent_id) or referenced_get(parent_id)
                    if parent is None or parent.created_at_ms < cutoff:
                        continue
                    if (
                        parent.in_reply_to_post_id is not None
                        or parent.in_reply_to_user_id is not None
                        or parent.repost_of_post_id is not None
                    ) and (
                        p.conversation_id is None
                        or parent.in_reply_to_post_id != p.conversation_id
                        or p.in_reply_to_user_id not in followed_set
                    ):
                        continue
                append(p)
                taken += 1
                if taken >= cap:
                    break

    # ------------------------------------------------------------------ introspection

    def stats(self) -> dict[str, int]:
        """Sizes and lifetime counters (for the actor's stats and metrics)."""
        return {
            "posts": len(self._posts),
            "referenced_posts": len(self._referenced),
            "deleted_posts": len(self._deleted),
            "authors": len(self._originals.keys() | self._secondary.keys()),
            "original_posts": sum(map(len, self._originals.values())),
            "secondary_posts": sum(map(len, self._secondary.values())),
            "video_posts": sum(map(len, self._videos.values())),
            "cached_authors": len(self._runs) + len(self._video_runs),
            "reply_parents": len(self._parents),  # entries of the parent table (posts a held reply names)
            **self.counters,
        }
