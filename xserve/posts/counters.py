"""``PostCounters``: per-post engagement and impression counters of one post-catalog shard.

They answer the popular source (recent posts by how many viewers engaged with
them) and the cold-start sampler (a new post's impressions and favorites).
Counts live beside the posts, sharded the same way (by post id): an
engagement or a served post is counted on the shard that owns the post.

Every count is of distinct viewers, and **causal**: each viewer is kept with
the time of their first counted action (or first impression) on the post, and
a question asked "as of ``now_ms``" counts only viewers whose time is at or
before it. Live traffic arrives in time order, so this is the plain count; a
replay or a simulator that asks about an earlier time never sees engagements
from its future, and one viewer repeating an action (or a refresh re-serving
a post) counts once.

Ranking the popular posts scans every counted post of the window (measured
~150 ms per 100k posts here), so a shard keeps its last ranking for
``refresh_ms`` and answers from it while it is fresh: at most that stale, and
never for a time before it was computed (still causal).

Counters are soft state: they start empty when the shard starts and fill from
live traffic (the engagements and the feeds served since). Memory is bounded
by the retention window: ``trim(now_ms)`` drops posts created more than
``retention_ms`` before ``now_ms``, and a post older than that when it is
engaged with or served is not counted at all (it can no longer be a candidate).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from xserve.schema import Action, Engagement, PopularPost, PopularRequest, PostStats, ServedPostRef

__all__ = ["PostCounters", "merge_popular"]


@dataclass(slots=True)
class _FirstTimes:
    """Viewer -> the time of their first counted event; ``latest`` = the largest of those times."""

    at: dict[int, int] = field(default_factory=dict)
    latest: int = -1

    def add(self, viewer_id: int, at_ms: int) -> bool:
        if self.at.get(viewer_id, at_ms + 1) <= at_ms:
            return False  # counted already, at this time or earlier
        self.at[viewer_id] = at_ms
        self.latest = max(self.latest, at_ms)
        return True

    def as_of(self, now_ms: int) -> int:
        if self.latest <= now_ms:
            return len(self.at)  # the live case: nothing is from after now
        return sum(1 for t in self.at.values() if t <= now_ms)


@dataclass(slots=True)
class _Post:
    author_id: int
    created_at_ms: int
    engaged: _FirstTimes = field(default_factory=_FirstTimes)  # viewers with a counted action
    favorited: _FirstTimes = field(default_factory=_FirstTimes)
    shown: _FirstTimes = field(default_factory=_FirstTimes)  # viewers it was served to


@dataclass(frozen=True, slots=True)
class _Ranking:
    """A popular ranking as computed at ``at_ms`` for one (max age, minimum) and up to ``limit`` posts."""

    at_ms: int
    key: tuple[int, int]  # (max_age_ms, min_engaged_users)
    limit: int
    posts: list[PopularPost]


class PostCounters:
    """See the module docstring. ``counted_actions``: the actions that count toward popularity; ``refresh_ms``:
    how long a popular ranking is reused (0: computed for every request)."""

    def __init__(self, counted_actions: Iterable[Action], retention_ms: int, refresh_ms: int = 0) -> None:
        if retention_ms <= 0 or refresh_ms < 0:
            raise ValueError(f"retention_ms must be > 0 and refresh_ms >= 0, got {retention_ms} and {refresh_ms}")
        self.counted_actions = frozenset(counted_actions)
        self.retention_ms = retention_ms
        self.refresh_ms = refresh_ms
        self._posts: dict[int, _Post] = {}
        self._ranking: _Ranking | None = None  # the last popular ranking, reused for refresh_ms

    def __repr__(self) -> str:
        return f"PostCounters(posts={len(self._posts)}, retention_ms={self.retention_ms})"

    def __len__(self) -> int:
        return len(self._posts)

    def _post(self, post_id: int, author_id: int, created_at_ms: int) -> _Post:
        post = self._posts.get(post_id)
        if post is None:
            post = self._posts[post_id] = _Post(author_id, created_at_ms)
        return post

    # ---------------------------------------------------------------- writes

    def record_engagement(self, e: Engagement) -> bool:
        """Count one engagement; it must carry ``post_created_at_ms`` (the API fills it). Returns whether a count
        changed (a viewer's repeat, an uncounted action or a post past retention changes nothing)."""
        if e.post_created_at_ms is None or e.timestamp_ms - e.post_created_at_ms > self.retention_ms:
            return False
        counted = e.action in self.counted_actions
        if not counted and e.action is not Action.FAVORITE:
            return False
        post = self._post(e.post_id, e.author_id, e.post_created_at_ms)
        changed = post.engaged.add(e.user_id, e.timestamp_ms) if counted else False
        if e.action is Action.FAVORITE:
            changed = post.favorited.add(e.user_id, e.timestamp_ms) or changed
        return changed

    def record_served(self, viewer_id: int, posts: Sequence[ServedPostRef], at_ms: int) -> int:
        """Count a feed served to ``viewer_id`` at ``at_ms`` as one impression per post; returns posts newly counted."""
        n = 0
        for ref in posts:
            if at_ms - ref.created_at_ms <= self.retention_ms:
                n += self._post(ref.post_id, ref.author_id, ref.created_at_ms).shown.add(viewer_id, at_ms)
        return n

    def trim(self, now_ms: int) -> int:
        """Forget posts created more than ``retention_ms`` before ``now_ms``; returns posts dropped."""
        cutoff = now_ms - self.retention_ms
        old = [pid for pid, p in self._posts.items() if p.created_at_ms < cutoff]
        for pid in old:
            del self._posts[pid]
        return len(old)

    # ---------------------------------------------------------------- reads

    def stats(self, post_ids: Iterable[int], now_ms: int) -> dict[int, PostStats]:
        """Engaged viewers and favorites as of ``now_ms`` of the counted posts among ``post_ids``."""
        return {
            pid: PostStats(p.engaged.as_of(now_ms), p.favorited.as_of(now_ms))
            for pid in post_ids
            if (p := self._posts.get(pid)) is not None
        }

    def impressions(self, post_ids: Iterable[int], now_ms: int) -> dict[int, int]:
        """Viewers each post was served to before or at ``now_ms`` (absent or 0: never served)."""
        return {pid: p.shown.as_of(now_ms) for pid in post_ids if (p := self._posts.get(pid)) is not None}

    def popular(self, req: PopularRequest) -> list[PopularPost]:
        """The ``max_results`` posts created within ``max_age_ms`` before ``now_ms`` (and not after it) with the
        most engaged viewers as of ``now_ms`` (at least ``min_engaged_users``); ties: the newer post first.

        Within ``refresh_ms`` after a ranking for the same window and minimum, and never before it, the answer is
        that ranking (less posts aged out since): counts up to ``refresh_ms`` old."""
        oldest = req.now_ms - req.max_age_ms
        r, key = self._ranking, (req.max_age_ms, req.min_engaged_users)
        if r is not None and r.key == key and r.at_ms <= req.now_ms < r.at_ms + self.refresh_ms and req.max_results <= r.limit:
            return [p for p in r.posts if p.created_at_ms >= oldest][: req.max_results]
        ranked = self._rank(req, oldest)
        if self.refresh_ms:
            self._ranking = _Ranking(req.now_ms, key, req.max_results, ranked)
        return ranked

    def _rank(self, req: PopularRequest, oldest: int) -> list[PopularPost]:
        found = []
        for pid, p in self._posts.items():
            if oldest <= p.created_at_ms <= req.now_ms:
                n = p.engaged.as_of(req.now_ms)
                if n >= req.min_engaged_users:
                    found.append(PopularPost(pid, p.author_id, p.created_at_ms, n))
        return heapq.nsmallest(req.max_results, found, key=_popular_order)


def merge_popular(answers: Iterable[Sequence[PopularPost]], max_results: int) -> list[PopularPost]:
    """The shards' answers merged into one list, best first (each shard answers its own best)."""
    return heapq.nsmallest(max_results, (p for answer in answers for p in answer), key=_popular_order)


def _popular_order(p: PopularPost) -> tuple[int, int, int]:
    return (-p.engaged_users, -p.created_at_ms, p.post_id)
