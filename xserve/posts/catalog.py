"""``PostCatalog``: post records for hydration, from the posts table, live writes and labels.

What the feed's hydrators need about a post (core data, media hence video
duration, the subscriber-only flag, visibility labels) is the ``Post`` record.
The catalog answers ``get(post_ids) -> {post_id: Post}`` from, in order:

1. posts created since the process started (``PostCreated`` events), kept
   for ``live_retention_ms`` so a restart rebuilds them from the event log;
2. an LRU cache of posts read from the posts table;
3. one batched ``lookup(missing_ids)`` call to the posts table per ``get``.

Labels set through the write API (``PostLabelsSet``) replace a post's stored
labels; a deleted post (``PostDeleted``, ``QuotedPostDeleted``) is absent from
every answer, as the mixer's ``PostDataClient`` contract says. Every event is
idempotent.

``quotes_of(post_id)`` lists the quotes of a post among this catalog's posts
young enough to be candidates (created live, or preloaded from the table), so
that deleting a post can delete its quotes (``QuotedPostDeleted``, as the
reference does). The index is rebuilt as the posts are: a restart preloads the
table and replays the log. Memory is bounded by ``cache_size`` plus the live
posts within the retention window plus the label/deletion overrides (one entry
per write) plus one small entry per recent quote.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

import msgspec

from xserve.schema import Post, PostCreated, PostDeleted, PostLabelsSet, QuotedPostDeleted, VisibilityLabel

__all__ = ["CatalogEvent", "PostCatalog", "PostLookup", "event_post_id"]

CatalogEvent = PostCreated | PostDeleted | QuotedPostDeleted | PostLabelsSet
PostLookup = Callable[[Sequence[int]], Iterable[Post]]  # reads posts by id from the table (absent ids skipped)


def event_post_id(event: CatalogEvent) -> int:
    """The post a catalog event changes (its shard owns the event)."""
    match event:
        case PostCreated(post=post):
            return post.post_id
        case QuotedPostDeleted(quoting_post_id=pid) | PostDeleted(post_id=pid) | PostLabelsSet(post_id=pid):
            return pid
    raise TypeError(f"not a catalog event: {type(event).__name__}")


class PostCatalog:
    """See the module docstring. ``lookup`` None means there is no posts table (tests, empty worlds)."""

    def __init__(self, lookup: PostLookup | None, cache_size: int, live_retention_ms: int) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self._lookup = lookup
        self._cache_size = cache_size
        self._retention_ms = live_retention_ms
        self._cache: OrderedDict[int, Post] = OrderedDict()  # LRU, most recent last
        self._live: dict[int, Post] = {}  # insertion order ~ creation order
        self._labels: dict[int, tuple[VisibilityLabel, ...]] = {}
        self._deleted: set[int] = set()
        # quoted post id -> {quoting post id: (its author, its created_at_ms)}, for recent quoting posts
        self._quotes: dict[int, dict[int, tuple[int, int]]] = {}
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"PostCatalog(cached={len(self._cache)}/{self._cache_size}, live={len(self._live)}, deleted={len(self._deleted)})"

    # ---------------------------------------------------------------- writes

    def apply(self, event: CatalogEvent) -> bool:
        """Apply one event; returns whether anything changed."""
        match event:
            case PostCreated(post=post):
                if post.post_id in self._live:
                    return False
                self._live[post.post_id] = post
                self._cache.pop(post.post_id, None)
                self._index_quote(post)
                return True
            case PostDeleted(post_id=pid) | QuotedPostDeleted(quoting_post_id=pid):
                if pid in self._deleted:
                    return False
                self._deleted.add(pid)
                return True
            case PostLabelsSet(post_id=pid, labels=labels):
                labels = tuple(sorted(set(labels)))
                if self._labels.get(pid) == labels:
                    return False
                self._labels[pid] = labels
                return True
        raise TypeError(f"not a catalog event: {type(event).__name__}")

    def preload(self, posts: Iterable[Post]) -> int:
        """Fill the cache with the posts young enough to be candidates, and index their quotes; returns posts cached."""
        n = 0
        for post in posts:
            self._index_quote(post)  # every one, also past the cache's capacity
            if n < self._cache_size:
                self._cache[post.post_id] = post
                n += 1
        return n

    def trim(self, now_ms: int) -> int:
        """Drop live posts (and indexed quotes) older than the retention window; returns live posts dropped."""
        cutoff = now_ms - self._retention_ms
        old = [pid for pid, p in self._live.items() if p.created_at_ms < cutoff]
        for pid in old:
            del self._live[pid]
        for quoted, quoting in list(self._quotes.items()):
            for pid in [pid for pid, (_, t) in quoting.items() if t < cutoff]:
                del quoting[pid]
            if not quoting:
                del self._quotes[quoted]
        return len(old)

    def _index_quote(self, post: Post) -> None:
        if post.quote_of_post_id is not None:
            self._quotes.setdefault(post.quote_of_post_id, {})[post.post_id] = (post.author_id, post.created_at_ms)

    # ---------------------------------------------------------------- reads

    def get(self, post_ids: Iterable[int]) -> dict[int, Post]:
        """The existing, undeleted posts among ``post_ids``, with their current labels."""
        out: dict[int, Post] = {}
        missing: list[int] = []
        for pid in post_ids:
            if pid in self._deleted or pid in out:
                continue
            post = self._live.get(pid)
            if post is None:
                post = self._cache.get(pid)
                if post is not None:
                    self._cache.move_to_end(pid)
            if post is None:
                missing.append(pid)
            else:
                out[pid] = post
        self.hits += len(out)
        self.misses += len(missing)
        if missing and self._lookup is not None:
            for post in self._lookup(missing):
                out[post.post_id] = post
                if self._cache_size:
                    self._cache[post.post_id] = post
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        if self._labels:
            for pid, post in out.items():
                labels = self._labels.get(pid)
                if labels is not None and labels != post.labels:
                    out[pid] = msgspec.structs.replace(post, labels=labels)
        return out

    def quotes_of(self, post_id: int) -> list[tuple[int, int]]:
        """``(quoting post id, its author)`` of the undeleted recent posts quoting ``post_id``, by id."""
        quoting = self._quotes.get(post_id, {})
        return sorted((pid, author) for pid, (author, _) in quoting.items() if pid not in self._deleted)

    def exists(self, post_ids: Sequence[int]) -> list[int]:
        """The ids among ``post_ids`` that exist and are not deleted."""
        found = self.get(post_ids)
        return [pid for pid in post_ids if pid in found]
