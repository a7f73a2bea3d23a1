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

**Tower and corpus stay paired.** The user tower is the one that embedded the
live embedding version (its manifest names the towers checkpoint): a thread
follows ``embeddings/CURRENT`` every ``retrieval.version_poll_s`` and, on a
switch, loads that version's tower beside the live one, then swaps the
(version, tower) pair in one assignment (``VersionFollower``). A user-tower
batch takes the pair once and every request in it searches that pair's version,
so a retrained tower goes live only with its re-embedded corpus, never alone.

The actors are named after the data directory (``names``, from ``app.py``) and
attached to through :mod:`xserve.actors.stateful`; the mixer reaches this
deployment through :class:`xserve.deployments.clients.RetrievalHandleClient`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
from ray import serve

from xserve import clock
from xserve.actors.naming import ActorNames
from xserve.actors.stateful import ActorPlacement, retrieval_actors
from xserve.clock import HOUR_MS
from xserve.config import RetrievalConfig
from xserve.deployments.clients import RetrievalShardClient
from xserve.retrieval.encoders import encoders_for_version
from xserve.retrieval.fanout import RetrievalFanout, request_k
from xserve.retrieval.merge import hits_to_posts
from xserve.storage.version_poll import VersionFollower
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
        actor_node_labels: dict[str, dict[str, str]] | None = None,
    ):
        self.config = msgspec.convert(config or {}, RetrievalConfig)
        self.versions = EmbeddingVersions(data_dir)
        actors = retrieval_actors(
            data_dir, self.config, max_post_age_ms, names or ActorNames.of(data_dir), detached=detached,
            placement=ActorPlacement(actor_scheduling, actor_node_labels or {}),
        )
        self.shards = actors.shards
        self.indexer = actors.indexer
        # (embedding version, the user tower that embedded it), swapped together
        self._paired = VersionFollower(
            self.versions.current_name,
            lambda v: encoders_for_version(self.config, v and self.versions.manifest(v), data_dir)[0],
        )
        self._encode_user.set_max_batch_size(self.config.user_batch_size)
        self._encode_user.set_batch_wait_timeout_s(self.config.user_batch_wait_s)
        self._fanout = RetrievalFanout(
            [RetrievalShardClient(h) for h in self.shards], self._paired.live.value, self.config,
            lambda: self._paired.live.version,
        )
        self._stop = threading.Event()
        threading.Thread(target=self._follow, name="retrieval-version-poll", daemon=True).start()
        self.user_batch_sizes: list[int] = []  # recent @serve.batch sizes (stats)

    # ------------------------------------------------------------------ reads

    def _follow(self) -> None:
        while not self._stop.wait(max(self.config.version_poll_s, 0.05)):  # 0 (tests): as often as is cheap
            self._paired.poll()

    @property
    def user_encoder(self) -> Any:
        """The live version's user tower."""
        return self._paired.live.value

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _encode_user(self, requests: list[RetrievalRequest]) -> list[tuple[np.ndarray, str | None]]:
        self.user_batch_sizes = (self.user_batch_sizes + [len(requests)])[-1000:]
        paired = self._paired.live  # once per batch: the tower and the version it embedded
        return [(v, paired.version) for v in paired.value.encode_users(requests)]  # (B, D) → B rows

    async def retrieve(self, req: RetrievalRequest) -> list[RetrievedPost]:
        return hits_to_posts(await self.retrieve_hits(req))

    async def retrieve_hits(self, req: RetrievalRequest) -> ShardHits:
        """``retrieve``'s answer as arrays: what the ingress asks for (NumPy arrays cross Ray as buffers,
        ~1,000 ``RetrievedPost`` Structs were pickled one by one: ~5 ms a feed, measured)."""
        k = request_k(req, self.config)
        vector, version = await self._encode_user(req)
        now_ms = req.now_ms or clock.now_ms()
        return await self._fanout.search_vector_async(vector, k, now_ms, req.exclude_ids, version)

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
            "version": self._paired.live.version,
            "tower": self._paired.stats(),
            "buffered": indexer["buffered"],
            "indexer": indexer,
            "shards_left_out": list(self._fanout.shards_left_out),
            "user_batches": len(sizes),
            "mean_user_batch": float(np.mean(sizes)) if sizes else 0.0,
            "shards": shard_stats,
        }
