"""``LiveIndexer``: live posts into the retrieval shards, durably, as a consumer of the post catalog's logs.

The post catalog logs (fsync) every post write before it is acknowledged; the
indexer reads those logs through a :class:`~xserve.storage.log.log_tail.LogTail`
and owns the one :class:`~xserve.retrieval.batcher.UpsertBatcher`:

* :meth:`catch_up` reads what the catalog logged since the last read: creates
  are buffered (embedded in batches by :meth:`flush`), deletes are sent to the
  shards at once (a deleted post leaves every later search before the write
  that deleted it is acknowledged);
* :meth:`flush` embeds and upserts everything buffered, then commits the
  tail's watermark (with the embedding version it was written into) to where
  the read had got before the buffer was taken. Nothing past the watermark is
  assumed durable, so after a crash (the buffer is lost) a restarted indexer
  reads again from the watermark and re-buffers the lost posts; upserts and
  deletes are idempotent, so reading an event twice changes nothing.

When the current embedding version changes (a backfill switched it), the
indexer reads the catalog again from the start into the new version; posts
older than ``max_post_age_ms`` are skipped (never retrievable), which bounds
that replay. While flushes fail the indexer stops reading once the buffer
holds ``max_buffered_upserts``: the log, not memory, holds the rest.
``add`` buffers posts that come from elsewhere (no log, no watermark: tests,
tools). Not thread-safe: one event loop drives it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from xserve.retrieval.batcher import UpsertBatcher
from xserve.sharding import shard_array
from xserve.schema import Post, PostCreated, PostDeleted, PostEmbeddings, QuotedPostDeleted
from xserve.storage.log.log_tail import LogTail

__all__ = ["LiveIndexer"]

Upsert = Callable[[int, PostEmbeddings, int], Awaitable[Any]]  # (shard, rows, now_ms)
Delete = Callable[[int, list[int], int], Awaitable[Any]]  # (shard, post ids, now_ms)


class LiveIndexer:
    """See the module docstring. ``clock_ms`` is wall time; ``monotonic`` paces the batcher."""

    def __init__(
        self,
        batcher: UpsertBatcher,
        tail: LogTail,
        upsert: Upsert,
        delete: Delete,
        current_version: Callable[[], str | None],
        max_post_age_ms: int,
        clock_ms: Callable[[], int],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.batcher = batcher
        self.tail = tail
        self._upsert, self._delete = upsert, delete
        self._current_version = current_version
        self.max_post_age_ms = max_post_age_ms
        self._clock_ms, self._monotonic = clock_ms, monotonic
        self._read_lock = asyncio.Lock()  # one reader of the tail; the buffer and positions change together
        self._flush_lock = asyncio.Lock()
        self.version = tail.meta.get("version")
        if self.version != current_version():  # a watermark for another version is no watermark
            self.tail.rewind({})
            self.version = current_version()
        self.counts = {"read": 0, "buffered": 0, "deleted": 0, "upserted": 0, "flushes": 0}

    def __repr__(self) -> str:
        return f"LiveIndexer(version={self.version}, buffered={len(self.batcher)}, committed={self.tail.committed})"

    async def catch_up(self) -> int:
        """Read the catalog's new events: buffer creates, apply deletes; returns events read."""
        async with self._read_lock:
            return await self._read()

    async def _read(self) -> int:
        if self.batcher.full():  # flushes are failing: leave the rest in the log (the batcher would drop it)
            return 0
        before = self.tail.positions()
        entries = self.tail.poll()
        now = self._clock_ms()
        cutoff = now - self.max_post_age_ms
        created: list[Post] = []
        deleted: list[int] = []
        for _, _, _, event in entries:
            match event:
                case PostCreated(post=post) if post.created_at_ms >= cutoff:
                    created.append(post)
                case PostDeleted(post_id=pid) | QuotedPostDeleted(quoting_post_id=pid):
                    deleted.append(pid)
        if created:
            self.batcher.add(created, self._monotonic())
        if deleted:
            try:
                await self._apply_deletes(deleted, now)
            except BaseException:
                self.tail.rewind(before)  # read them again: a flush must not commit past an unapplied delete
                raise
        self.counts["read"] += len(entries)
        self.counts["buffered"] += len(created)
        return len(entries)

    async def add(self, posts: Sequence[Post]) -> int:
        """Buffer posts that come from no log (not covered by the watermark)."""
        self.batcher.add(posts, self._monotonic())
        return len(posts)

    async def delete(self, post_ids: Sequence[int], now_ms: int) -> int:
        async with self._read_lock:
            await self._apply_deletes(list(post_ids), now_ms)
        return len(post_ids)

    async def _apply_deletes(self, post_ids: list[int], now_ms: int) -> None:
        self.batcher.discard(post_ids)  # a post deleted while buffered is never written
        ids = np.asarray(post_ids, dtype=np.int64)
        owner = shard_array(ids, self.batcher.num_shards)
        await asyncio.gather(*(self._delete(s, ids[owner == s].tolist(), now_ms) for s in np.unique(owner).tolist()))
        self.counts["deleted"] += len(post_ids)

    def due(self) -> bool:
        """A flush is due: the batcher's rule (size or age), or, with nothing buffered, a watermark to commit."""
        if len(self.batcher):
            return self.batcher.due(self._monotonic())
        return self.tail.positions() != self.tail.committed

    async def flush(self) -> int:
        """Embed and upsert everything buffered, then commit the watermark; returns rows written.

        On failure the taken posts go back into the buffer and nothing is committed.
        """
        async with self._flush_lock:
            current = self._current_version()
            async with self._read_lock:
                if current != self.version:  # re-read the catalog into the new version
                    self.tail.rewind({})
                    self.version = current
                    await self._read()
                positions = self.tail.positions()
                taken = self.batcher.take()
            written = 0
            if taken is not None:
                try:
                    per_shard = await asyncio.to_thread(self.batcher.encode, taken)  # the tower, off the event loop
                    now = self._clock_ms()
                    written = sum(await asyncio.gather(*(self._upsert(s, rows, now) for s, rows in per_shard.items())))
                except BaseException:
                    self.batcher.put_back(taken, self._monotonic())
                    raise
            self.tail.commit(positions, version=self.version)
            self.counts["upserted"] += int(written)
            self.counts["flushes"] += 1
            return int(written)

    def stats(self) -> dict[str, Any]:
        return {**self.counts, "version": self.version, "buffered": len(self.batcher), "lag": self.tail.lag()}
