"""``Retrieval``: the Ray Serve deployment for out-of-network candidates (a thin shell).

Per request: the user tower runs once, batched across concurrent requests by
``@serve.batch``; the current embedding version is read once; every
``RetrievalShard`` actor is searched in parallel for that version; the
per-shard top-k lists are merged (``xserve.retrieval.merge``). Live writes:
``posts_created`` buffers posts in an :class:`UpsertBatcher` that a background
task flushes on size or age; ``posts_deleted`` hides posts at once (each shard's
deleted set) and deletes them from the tables.

:class:`RetrievalHandleAdapter` wraps a handle to this deployment so it
satisfies the mixer's ``async retrieve(req) -> list[RetrievedPost]`` Protocol.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
from ray import serve

from xserve.actors.calls import uncancelled
from xserve.actors.retrieval import get_or_create_shards
from xserve.config import HOUR_MS, RetrievalConfig
from xserve.retrieval.batcher import UpsertBatcher
from xserve.retrieval.encoders import load_encoders
from xserve.retrieval.merge import hits_to_posts, merge_top_k
from xserve.retrieval.routing import shard_of
from xserve.retrieval.service import request_k, split_excludes, wall_clock_ms
from xserve.retrieval.version_poll import PolledVersion
from xserve.schema import Post, RetrievalRequest, RetrievedPost
from xserve.storage.embeddings import EmbeddingVersions

__all__ = ["Retrieval", "RetrievalHandleAdapter"]

log = logging.getLogger(__name__)


@serve.deployment(max_ongoing_requests=64)
class Retrieval:
    """See the module docstring. Constructor arguments are small (paths and plain dicts)."""

    def __init__(
        self,
        data_dir: str,
        config: dict[str, Any] | None = None,
        max_post_age_ms: int = 48 * HOUR_MS,
        detached_shards: bool = False,
    ):
        self.config = msgspec.convert(config or {}, RetrievalConfig)
        self.versions = EmbeddingVersions(data_dir)
        self.shards = get_or_create_shards(data_dir, self.config, max_post_age_ms, detached=detached_shards)
        self.user_encoder, post_encoder, model_version = load_encoders(self.config)
        self.batcher = UpsertBatcher(
            post_encoder, self.config.num_shards, self.config.flush_size, self.config.flush_age_s, model_version
        )
        self._encode_user.set_max_batch_size(self.config.user_batch_size)
        self._encode_user.set_batch_wait_timeout_s(self.config.user_batch_wait_s)
        self._current_version = PolledVersion(self.versions.current_name, self.config.version_poll_s)
        self._flush_lock = asyncio.Lock()
        self._flusher: asyncio.Task | None = None
        self.user_batch_sizes: list[int] = []  # recent @serve.batch sizes (stats)

    # ------------------------------------------------------------------ reads

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _encode_user(self, requests: list[RetrievalRequest]) -> list[np.ndarray]:
        self.user_batch_sizes = (self.user_batch_sizes + [len(requests)])[-1000:]
        return list(self.user_encoder.encode_users(requests))  # (B, D) → B rows

    async def retrieve(self, req: RetrievalRequest) -> list[RetrievedPost]:
        k = request_k(req, self.config)
        vector = await self._encode_user(req)
        now_ms = req.now_ms or wall_clock_ms()
        version = self._current_version()
        excludes = split_excludes(req.exclude_ids, len(self.shards))
        parts = await asyncio.gather(
            *(uncancelled(s.search.remote(vector, k, now_ms, excludes[i], version)) for i, s in enumerate(self.shards))
        )
        return hits_to_posts(merge_top_k(parts, k))

    # ------------------------------------------------------------------ writes

    def _ensure_flusher(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        tick = max(self.config.flush_age_s / 4, 0.01)
        while True:
            await asyncio.sleep(tick)
            if self.batcher.due(time.monotonic()):
                try:
                    await self.flush()
                except Exception:  # the posts went back into the buffer; the next tick retries
                    log.exception("retrieval: flushing live upserts failed")

    async def flush(self) -> int:
        """Embed and upsert everything buffered now; returns rows written.

        On failure the taken posts go back into the buffer (upserts are
        idempotent, so shards that did succeed are simply written again).
        """
        async with self._flush_lock:
            taken = self.batcher.take()
            if taken is None:
                return 0
            try:
                per_shard = await asyncio.to_thread(self.batcher.encode, taken)  # tower call off the event loop
                now_ms = wall_clock_ms()
                written = await asyncio.gather(*(self.shards[s].upsert.remote(rows, now_ms) for s, rows in per_shard.items()))
            except BaseException:
                self.batcher.put_back(taken, time.monotonic())
                raise
            return int(sum(written))

    async def posts_created(self, posts: Sequence[Post]) -> int:
        """Buffer created posts; they are searchable within ``flush_age_s`` (plus one flush)."""
        self.batcher.add(posts, time.monotonic())
        self._ensure_flusher()
        if self.batcher.due(time.monotonic()):
            await self.flush()
        return len(posts)

    async def posts_deleted(self, post_ids: Sequence[int], now_ms: int = 0) -> int:
        """Hide the posts from every later search, then delete them from their shards' tables."""
        ids = np.asarray(list(post_ids), dtype=np.int64)
        self.batcher.discard(ids.tolist())
        owner = shard_of(ids, len(self.shards))
        now_ms = now_ms or wall_clock_ms()
        await asyncio.gather(
            *(self.shards[s].delete.remote(ids[owner == s].tolist(), now_ms) for s in np.unique(owner).tolist())
        )
        return len(ids)

    async def stats(self) -> dict[str, Any]:
        shard_stats = await asyncio.gather(*(s.stats.remote() for s in self.shards))
        sizes = self.user_batch_sizes
        return {
            "version": self._current_version(),
            "buffered": len(self.batcher),
            "user_batches": len(sizes),
            "mean_user_batch": float(np.mean(sizes)) if sizes else 0.0,
            "shards": shard_stats,
        }


class RetrievalHandleAdapter:
    """A ``Retrieval`` deployment handle as the mixer's retrieval Protocol."""

    def __init__(self, handle: Any):
        self._handle = handle

    def __repr__(self) -> str:
        return "RetrievalHandleAdapter(Retrieval)"

    async def retrieve(self, req: RetrievalRequest) -> list[RetrievedPost]:
        return await self._handle.retrieve.remote(req)
