"""The live-upsert batcher: buffer created posts, embed them in batches, hand them out per shard.

Encoding one post at a time wastes the candidate tower (a batch of 256 costs
about what one costs), so created posts wait here until ``flush_size`` are
buffered or the oldest has waited ``flush_age_s``; the shell that owns the
batcher (the Retrieval deployment) polls :meth:`due` on a timer and sends each
shard its part of :meth:`drain`. A post deleted while buffered is dropped.

Memory is bounded: while flushes fail, posts accumulate up to ``max_buffered``
and beyond it the oldest are dropped (counted in ``dropped``). The live
indexer, which reads posts from the catalog's durable logs, stops reading when
:meth:`full` instead, so a logged post is never dropped; only posts handed to
``add`` directly (tools, tests) can be.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Iterable

import numpy as np

from xserve.retrieval.protocols import PostEncoder
from xserve.sharding import shard_array
from xserve.schema import Post, PostEmbeddings

__all__ = ["Taken", "UpsertBatcher"]

Taken = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # post ids, author ids, created_at_ms, in reply to (0 = none)


class UpsertBatcher:
    """Buffers posts; ``drain`` embeds them and groups the rows by shard. Not thread-safe."""

    def __init__(
        self,
        encoder: PostEncoder,
        num_shards: int,
        flush_size: int,
        flush_age_s: float,
        model_version: str | Callable[[], str] = "",
        max_buffered: int | None = None,
    ):
        if flush_size < 1:
            raise ValueError(f"flush_size must be >= 1, got {flush_size}")
        if max_buffered is not None and max_buffered < flush_size:
            raise ValueError(f"max_buffered must be >= flush_size ({flush_size}), got {max_buffered}")
        if flush_age_s < 0:
            raise ValueError(f"flush_age_s must be >= 0, got {flush_age_s}")
        self.encoder = encoder
        self.num_shards = num_shards
        self.flush_size = flush_size
        self.flush_age_s = flush_age_s
        # a callable is asked after each tower call: the version of the tower that just embedded the batch
        self.model_version = model_version
        self.max_buffered = max_buffered  # None = unbounded
        self.dropped = 0  # posts dropped (oldest first) because the buffer was full
        self._posts: dict[int, tuple[int, int, int]] = {}  # post id → (author, created_at_ms, in reply to or 0), oldest first
        self._oldest_s: float | None = None

    def __len__(self) -> int:
        return len(self._posts)

    def __repr__(self) -> str:
        return f"UpsertBatcher(flush_size={self.flush_size}, flush_age_s={self.flush_age_s}, buffered={len(self)})"

    def add(self, posts: Iterable[Post], now_s: float) -> None:
        for post in posts:
            self._posts[post.post_id] = (post.author_id, post.created_at_ms, post.in_reply_to_post_id or 0)
        self._bound()
        if self._posts and self._oldest_s is None:
            self._oldest_s = now_s

    def _bound(self) -> None:
        excess = 0 if self.max_buffered is None else len(self._posts) - self.max_buffered
        for pid in list(itertools.islice(self._posts, max(0, excess))):  # the oldest, in insertion order
            del self._posts[pid]
        self.dropped += max(0, excess)

    def full(self) -> bool:
        """At ``max_buffered``: a reader that can read again later should wait rather than add."""
        return self.max_buffered is not None and len(self._posts) >= self.max_buffered

    def discard(self, post_ids: Collection[int]) -> None:
        """Forget buffered posts that were deleted before being flushed."""
        for pid in post_ids:
            self._posts.pop(pid, None)
        if not self._posts:
            self._oldest_s = None

    def due(self, now_s: float) -> bool:
        if not self._posts:
            return False
        return len(self._posts) >= self.flush_size or now_s - (self._oldest_s or now_s) >= self.flush_age_s

    def take(self) -> Taken | None:
        """Empty the buffer (fast, no encoding): (post ids, author ids, created_at_ms, in reply to), or None."""
        if not self._posts:
            return None
        post_ids = np.fromiter(self._posts, dtype=np.int64, count=len(self._posts))
        meta = np.array(list(self._posts.values()), dtype=np.int64).reshape(-1, 3)  # (N, 3): author, created, reply
        self._posts = {}
        self._oldest_s = None
        return post_ids, meta[:, 0].copy(), meta[:, 1].copy(), meta[:, 2].copy()

    def put_back(self, taken: Taken, now_s: float) -> None:
        """Return posts from a failed flush; newer buffered versions of the same ids win."""
        post_ids, *meta = (a.tolist() for a in taken)
        returned = dict(zip(post_ids, zip(*meta)))  # older than anything buffered since: they go first
        returned.update(self._posts)
        self._posts = returned
        self._bound()
        if self._posts and self._oldest_s is None:
            self._oldest_s = now_s

    def encode(self, taken: Taken | None) -> dict[int, PostEmbeddings]:
        """Embed taken posts (one tower call) and group the rows by shard; touches no state.

        Split from :meth:`take` so a shell can run the slow tower call off its
        event loop while new posts keep arriving.
        """
        if taken is None:
            return {}
        post_ids, author_ids, created, replies = taken
        vectors = np.asarray(self.encoder.encode_posts(post_ids, author_ids), dtype=np.float32)  # (N, D)
        version = self.model_version if isinstance(self.model_version, str) else self.model_version()
        shards = shard_array(post_ids, self.num_shards)
        out: dict[int, PostEmbeddings] = {}
        for s in np.unique(shards).tolist():
            m = shards == s
            out[s] = PostEmbeddings(post_ids[m], author_ids[m], created[m], vectors[m], version, replies[m])
        return out

    def drain(self) -> dict[int, PostEmbeddings]:
        """``encode(take())``: embed every buffered post and empty the buffer; shard → rows."""
        return self.encode(self.take())
