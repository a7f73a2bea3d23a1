"""``Retrieval``: the Ray Serve deployment for out-of-network candidates (a thin shell).

Per request: the user tower runs once, batched across concurrent requests by
``@serve.batch``; the current embedding version is read once; every
``RetrievalShard`` actor is searched in parallel for that version, each for
its :func:`~xserve.retrieval.merge.shard_quota` of hits; the per-shard lists
are merged (``xserve.retrieval.merge``); a shard whose actor is dead or
unavailable is left out of that merge rather than failing the request (its
posts are missing, the others' are not). Live writes go
to the data directory's one ``RetrievalIndexer`` actor: ``catch_up`` has it read
the post catalog's logs (creates buffered and embedded in batches within
``flush_age_s``, deletes hidden at once), durably, with a watermark
(``xserve.retrieval.live``); ``posts_created`` / ``posts_deleted`` hand it posts
that come from no log (tools, tests).

:class:`RetrievalHandleAdapter` wraps a handle to this deployment so it
satisfies the mixer's ``async retrieve(req) -> list[RetrievedPost]`` Protocol.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
import ray
from ray import serve

from xserve import clock
from xserve.actors.calls import uncancelled
from xserve.actors.retrieval import get_or_create_indexer, get_or_create_shards
from xserve.clock import HOUR_MS
from xserve.config import RetrievalConfig
from xserve.retrieval.encoders import load_encoders
from xserve.retrieval.fanout import request_k, split_excludes
from xserve.retrieval.merge import hits_to_posts, merge_top_k, shard_quota
from xserve.retrieval.version_poll import PolledVersion
from xserve.schema import Post, RetrievalRequest, RetrievedPost
from xserve.storage.lance.embeddings import EmbeddingVersions

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
        self.indexer = get_or_create_indexer(data_dir, self.config, max_post_age_ms, detached=detached_shards)
        self.user_encoder, _, _ = load_encoders(self.config)
        self._encode_user.set_max_batch_size(self.config.user_batch_size)
        self._encode_user.set_batch_wait_timeout_s(self.config.user_batch_wait_s)
        self._current_version = PolledVersion(self.versions.current_name, self.config.version_poll_s)
        self.user_batch_sizes: list[int] = []  # recent @serve.batch sizes (stats)
        self.shards_left_out = [0] * len(self.shards)  # searches merged without this shard (stats)

    # ------------------------------------------------------------------ reads

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _encode_user(self, requests: list[RetrievalRequest]) -> list[np.ndarray]:
        self.user_batch_sizes = (self.user_batch_sizes + [len(requests)])[-1000:]
        return list(self.user_encoder.encode_users(requests))  # (B, D) → B rows

    async def retrieve(self, req: RetrievalRequest) -> list[RetrievedPost]:
        k = request_k(req, self.config)
        vector = await self._encode_user(req)
        now_ms = req.now_ms or clock.now_ms()
        version = self._current_version()
        excludes = split_excludes(req.exclude_ids, len(self.shards))
        quota = shard_quota(k, len(self.shards), self.config.shard_quota_sigmas)  # as RetrievalFanout does
        parts = await asyncio.gather(
            *(self._search(i, vector, quota, now_ms, excludes[i], version) for i in range(len(self.shards)))
        )
        answered = [p for p in parts if p is not None]
        if not answered:
            raise RuntimeError("no retrieval shard answered: every shard is down or restarting")
        return hits_to_posts(merge_top_k(answered, k))

    async def _search(self, shard: int, vector: np.ndarray, quota: int, now_ms: int, exclude: Any, version: Any) -> Any:
        """One shard's hits, or None when its actor is dead or unavailable (restarting): the merge goes on
        without it (its posts are missing from this answer, the other shards' are not)."""
        try:
            return await uncancelled(self.shards[shard].search.remote(vector, quota, now_ms, exclude, version))
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
            self.shards_left_out[shard] += 1
            log.debug("retrieval shard %d left out: %s", shard, type(exc).__name__)
            return None

    # ------------------------------------------------------------------ writes

    async def catch_up(self) -> int:
        """Have the indexer read what the post catalog logged (deletes hidden at once); returns events read."""
        return await self.indexer.catch_up.remote()

    async def posts_created(self, posts: Sequence[Post]) -> int:
        """Buffer posts from no log; they are searchable within ``flush_age_s`` (plus one flush)."""
        return await self.indexer.add.remote(list(posts))

    async def posts_deleted(self, post_ids: Sequence[int], now_ms: int = 0) -> int:
        """Hide the posts from every later search, then delete them from their shards' tables."""
        return await self.indexer.delete.remote(list(post_ids), now_ms or clock.now_ms())

    async def flush(self) -> int:
        """Embed and upsert everything buffered now; returns rows written."""
        return await self.indexer.flush.remote()

    async def stats(self) -> dict[str, Any]:
        shard_stats = await asyncio.gather(*(s.stats.remote() for s in self.shards))
        indexer = await self.indexer.stats.remote()
        sizes = self.user_batch_sizes
        return {
            "version": self._current_version(),
            "buffered": indexer["buffered"],
            "indexer": indexer,
            "shards_left_out": list(self.shards_left_out),
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
