"""``Retrieval``: the Ray Serve deployment for out-of-network candidates (a thin shell).

Per request: the user tower runs once, batched across concurrent requests by
``@serve.batch``; then :class:`~xserve.retrieval.fanout.RetrievalFanout` (the
one fan-out, also used in process) reads the current embedding version once
and searches every ``RetrievalShard`` actor in parallel for that version, each
for its :func:`~xserve.retrieval.merge.shard_quota` of hits, and merges the
answers; a shard whose actor is dead or unavailable is left out of that merge
rather than failing the request (its posts are missing, the others' are not).
Live writes go to the data directory's one ``RetrievalIndexer`` actor:
``catch_up`` has it read the post catalog's logs (creates buffered and
embedded in batches within ``flush_age_s``, deletes hidden at once), durably,
with a watermark (``xserve.retrieval.live``); ``posts_created`` /
``posts_deleted`` hand it posts that come from no log (tools, tests).

The actors are named after the data directory (``names``, from ``app.py``) and
attached to through :mod:`xserve.actors.stateful`; the mixer reaches this
deployment through :class:`xserve.deployments.clients.RetrievalHandleClient`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
from ray import serve

from xserve import clock
from xserve.actors.naming import ActorNames
from xserve.actors.stateful import retrieval_actors
from xserve.clock import HOUR_MS
from xserve.config import RetrievalConfig
from xserve.deployments.clients import RetrievalShardClient
from xserve.retrieval.encoders import load_encoders
from xserve.retrieval.fanout import RetrievalFanout, request_k
from xserve.retrieval.merge import hits_to_posts
from xserve.storage.version_poll import PolledVersion
from xserve.schema import Post, RetrievalRequest, RetrievedPost, ShardHits
from xserve.storage.lance.embeddings import EmbeddingVersions

__all__ = ["Retrieval"]


@serve.deployment(max_ongoing_requests=64)
class Retrieval:
    """See the module docstring. Constructor arguments are small (paths and plain dicts)."""

    def __init__(
        self,
        data_dir: str,
        config: dict[str, Any] | None = None,
        max_post_age_ms: int = 48 * HOUR_MS,
        names: ActorNames | None = None,
        detached: bool = False,
        actor_scheduling: str = "DEFAULT",
    ):
        self.config = msgspec.convert(config or {}, RetrievalConfig)
        self.versions = EmbeddingVersions(data_dir)
        actors = retrieval_actors(
            data_dir, self.config, max_post_age_ms, names or ActorNames.of(data_dir), detached=detached,
            scheduling=actor_scheduling,
        )
        self.shards = actors.shards
        self.indexer = actors.indexer
        self.user_encoder, _, _ = load_encoders(self.config)
        self._encode_user.set_max_batch_size(self.config.user_batch_size)
        self._encode_user.set_batch_wait_timeout_s(self.config.user_batch_wait_s)
        self._current_version = PolledVersion(self.versions.current_name, self.config.version_poll_s)
        self._fanout = RetrievalFanout(
            [RetrievalShardClient(h) for h in self.shards], self.user_encoder, self.config, self._current_version
        )
        self.user_batch_sizes: list[int] = []  # recent @serve.batch sizes (stats)

    # ------------------------------------------------------------------ reads

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _encode_user(self, requests: list[RetrievalRequest]) -> list[np.ndarray]:
        self.user_batch_sizes = (self.user_batch_sizes + [len(requests)])[-1000:]
        return list(self.user_encoder.encode_users(requests))  # (B, D) → B rows

    async def retrieve(self, req: RetrievalRequest) -> list[RetrievedPost]:
        return hits_to_posts(await self.retrieve_hits(req))

    async def retrieve_hits(self, req: RetrievalRequest) -> ShardHits:
        """``retrieve``'s answer as arrays: what the ingress asks for (NumPy arrays cross Ray as buffers,
        ~1,000 ``RetrievedPost`` Structs were pickled one by one: ~5 ms a feed, measured)."""
        k = request_k(req, self.config)
        vector = await self._encode_user(req)
        now_ms = req.now_ms or clock.now_ms()
        return await self._fanout.search_vector_async(vector, k, now_ms, req.exclude_ids)

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
            "shards_left_out": list(self._fanout.shards_left_out),
            "user_batches": len(sizes),
            "mean_user_batch": float(np.mean(sizes)) if sizes else 0.0,
            "shards": shard_stats,
        }
