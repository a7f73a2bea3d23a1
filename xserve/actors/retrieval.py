"""``RetrievalShard``: the Ray actor owning one retrieval shard (a thin shell), and ``RetrievalIndexer``.

All logic is in :class:`xserve.retrieval.shard.ShardSearcher`; this shell adds
a maintenance thread (trim, compaction, index update every
``maintenance_interval_s``, and an index update alone once
``optimize_after_writes`` writes piled up) that runs beside the query threads,
so maintenance never queues ahead of a search. Constructor arguments are small (a path, an
index and a config dict) so a restarted actor can always be rebuilt (ray
issue 53727).

``RetrievalIndexer`` (one per data directory) is the shell of
:class:`xserve.retrieval.live.LiveIndexer`: the one writer of live posts into
the shards, a consumer of the post catalog's logs with its watermark in
``<data_dir>/embeddings/LIVE_WATERMARK.json``; a timer flushes its buffer and
reads the catalog every ``flush_age_s / 4``, so it catches up after a restart
without being asked.

The actors are created in :mod:`xserve.actors.stateful`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Collection, Sequence
from typing import Any

import msgspec
import numpy as np
import ray

from xserve import clock
from xserve.actors.naming import NAMESPACE, ActorNames
from xserve.config import RetrievalConfig
from xserve.retrieval.shard import ShardSearcher
from xserve.schema import Post, PostEmbeddings, ShardHits
from xserve.storage.lance.embeddings import EmbeddingVersions
from xserve.storage.layout import DataDirLayout

__all__ = ["RetrievalIndexer", "RetrievalShard"]

log = logging.getLogger(__name__)


# max_restarts=-1: a restart only reopens the shard's LanceDB table (cheap, same state every time)
@ray.remote(max_restarts=-1, max_task_retries=0)
class RetrievalShard:
    """One shard: ``search``/``upsert``/``delete``/``maintain``/``stats`` of a ``ShardSearcher``."""

    def __init__(self, data_dir: str, shard: int, config: dict[str, Any], max_post_age_ms: int, maintenance: bool = True):
        self.config = msgspec.convert(config, RetrievalConfig)
        versions = EmbeddingVersions(data_dir)
        self.searcher = ShardSearcher(
            shard, versions.shard_opener(shard, self.config), versions.current_name, self.config, max_post_age_ms
        )
        self.maintenance_errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if maintenance and self.config.maintenance_interval_s > 0:
            self._thread = threading.Thread(target=self._maintenance_loop, name=f"shard{shard}-maintenance", daemon=True)
            self._thread.start()

    def _maintenance_loop(self) -> None:
        """Full pass (trim + index) every ``maintenance_interval_s``; a light pass (index new
        rows) sooner when ``optimize_after_writes`` writes have piled up small fragments."""
        last_full = time.monotonic()
        while not self._stop.wait(min(self.config.maintenance_check_s, self.config.maintenance_interval_s)):
            full = time.monotonic() - last_full >= self.config.maintenance_interval_s
            if not (full or self.searcher.maintenance_due()):
                continue
            try:
                self.searcher.maintain(clock.now_ms(), trim=full)
            except Exception:  # a failed pass is retried next time; queries are unaffected
                self.maintenance_errors += 1
                log.exception("retrieval shard %d: maintenance failed", self.searcher.shard)
            if full:
                last_full = time.monotonic()

    def search(
        self, vector: np.ndarray, k: int, now_ms: int, exclude_ids: Collection[int] = (), version: str | None = None
    ) -> ShardHits:
        return self.searcher.search(vector, k, now_ms, exclude_ids, version)

    def upsert(self, rows: PostEmbeddings, now_ms: int | None = None) -> int:
        return self.searcher.upsert(rows, now_ms or clock.now_ms())

    def delete(self, post_ids: Collection[int], now_ms: int | None = None) -> int:
        return self.searcher.delete(post_ids, now_ms or clock.now_ms())

    def maintain(self, now_ms: int | None = None) -> dict[str, float]:
        return self.searcher.maintain(now_ms or clock.now_ms())

    def stats(self) -> dict[str, object]:
        return {**self.searcher.stats(), "maintenance_errors": self.maintenance_errors}

    def stop(self) -> None:
        """Stop the maintenance thread (before the actor is killed)."""
        self._stop.set()


@ray.remote(max_restarts=-1, max_task_retries=0)
class RetrievalIndexer:
    """The one writer of live posts (see the module docstring); a thin shell over ``LiveIndexer``."""

    def __init__(self, data_dir: str, config: dict[str, Any], max_post_age_ms: int, names: ActorNames) -> None:
        from xserve.actors.posts import catalog_tail
        from xserve.retrieval.batcher import UpsertBatcher
        from xserve.retrieval.encoders import FollowedPostEncoder, TowerOnFirstUse, encoders_for_version
        from xserve.retrieval.live import LiveIndexer
        from xserve.storage.version_poll import VersionFollower

        cfg = msgspec.convert(config, RetrievalConfig)
        versions = EmbeddingVersions(data_dir)
        # created before this actor, by the same call (xserve.actors.stateful.retrieval_actors)
        self._shards = [ray.get_actor(names.retrieval_shard(s), namespace=NAMESPACE) for s in range(cfg.num_shards)]

        def towers(version: str | None) -> TowerOnFirstUse:
            tower = TowerOnFirstUse(lambda: encoders_for_version(cfg, version and versions.manifest(version), data_dir)[1:])
            if hasattr(self, "_towers"):
                tower.load()  # a switch loads now, so that a version that fails to load keeps the live one
            return tower

        # the candidate tower of the current embedding version (its manifest names it), followed on each tick; the
        # start's is loaded when the first created post is embedded (TowerOnFirstUse says why)
        self._towers = VersionFollower(versions.current_name, towers)
        post_encoder = FollowedPostEncoder(self._live_post_tower)
        batcher = UpsertBatcher(
            post_encoder, cfg.num_shards, cfg.flush_size, cfg.flush_age_s, lambda: self._towers.live.value.version,
            max(cfg.max_buffered_upserts, cfg.flush_size),
        )
        self._live = LiveIndexer(
            batcher,
            catalog_tail(data_dir, DataDirLayout(data_dir).live_index_watermark),
            lambda s, rows, now: self._shards[s].upsert.remote(rows, now),
            lambda s, ids, now: self._shards[s].delete.remote(ids, now),
            versions.current_name,
            max_post_age_ms,
            clock.now_ms,
        )
        self._tick_s = max(cfg.flush_age_s / 4, 0.01)
        self._timer: asyncio.Task[None] | None = None

    def _live_post_tower(self) -> Any:
        """The current version's candidate tower, re-read before each embedding batch (a file read; a load
        only after a switch), so a batch is embedded by the tower of the version it is written into."""
        self._towers.poll()
        return self._towers.live.value

    def _ensure_timer(self) -> None:
        if self._timer is None or self._timer.done():
            self._timer = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            try:
                await self._live.catch_up()
                if self._live.due():
                    await self._live.flush()
            except Exception:  # retried next tick: nothing was committed past what is durable
                log.exception("retrieval indexer: catching up or flushing failed")

    async def catch_up(self) -> int:
        """Read the catalog's new events (deletes applied, creates buffered); returns events read."""
        self._ensure_timer()
        return await self._live.catch_up()

    async def add(self, posts: Sequence[Post]) -> int:
        self._ensure_timer()
        return await self._live.add(posts)

    async def delete(self, post_ids: Sequence[int], now_ms: int) -> int:
        self._ensure_timer()
        return await self._live.delete(post_ids, now_ms)

    async def flush(self) -> int:
        self._ensure_timer()
        return await self._live.flush()

    async def stats(self) -> dict[str, Any]:
        self._ensure_timer()
        return {**self._live.stats(), "towers": self._towers.stats()}
