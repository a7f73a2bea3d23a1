"""``PostCatalogShard``: one shard of the post catalog (posts sharded by id) as a Ray actor.

A shard is a thin shell around :class:`xserve.posts.PostCatalog`: the
posts table is its read-through store (warmed with the posts young enough to
be candidates), and its event log (``<data_dir>/hydration/shard-<i>-of-<n>/``)
holds the post writes, label changes and deletions it has accepted, replayed on
restart. A write is logged (fsynced) before it is applied and acknowledged.
Beside the catalog it holds its posts' :class:`~xserve.posts.PostCounters`
(engaged viewers, favorites, impressions: soft state, filled by live traffic).
These logs are the source of truth for posts: Thunder and retrieval consume
them through :func:`catalog_tail` (``docs/reliability.md``, "Durability").

The client that reaches the shards over Ray is
:class:`xserve.deployments.clients.PostCatalogClient`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import ray

from xserve.clock import now_ms
from xserve.config import XServeConfig
from xserve.posts import CatalogEvent, PostCatalog, PostCounters
from xserve.schema import Engagement, PopularRequest, ServedPostRef
from xserve.sharding import shard_for
from xserve.storage.layout import SHARD_LOG_GLOB, DataDirLayout
from xserve.storage.log.event_log import EventLog
from xserve.storage.log.log_tail import LogTail

__all__ = ["PostCatalogShard", "catalog_log_dir", "catalog_tail", "open_catalog"]


def catalog_log_dir(data_dir: str | Path, shard: int, num_shards: int) -> Path:
    """The event log of one post-catalog shard."""
    return DataDirLayout(data_dir).catalog_log(shard, num_shards)


def catalog_tail(data_dir: str | Path, watermark: str | Path) -> LogTail:
    """A consumer of every post-catalog shard's log (any shard count, past or present), from ``watermark``."""
    return LogTail(DataDirLayout(data_dir).catalog_logs, SHARD_LOG_GLOB, CatalogEvent, watermark)


def open_catalog(config: XServeConfig, shard: int, num_shards: int, now_ms: int) -> tuple[PostCatalog, EventLog, int, int]:
    """One shard's catalog as the data directory holds it (a start or a restart): the posts table as its
    read-through store, the recent posts preloaded, its log replayed and held for writing. Returns (catalog,
    log, posts preloaded, events replayed)."""
    data_dir = Path(config.storage.data_dir)
    lookup = None
    preloaded = 0
    if DataDirLayout(data_dir).table("posts").exists():
        from xserve.storage.lance.post_lookup import PostTableLookup

        lookup = PostTableLookup(data_dir)
    retention = config.mixer.max_post_age_ms
    catalog = PostCatalog(lookup, config.serving.hydration_cache_size, retention)
    if lookup is not None:
        recent = [p for p in lookup.recent(now_ms - retention) if shard_for(p.post_id, num_shards) == shard]
        preloaded = catalog.preload(recent)
    log = EventLog(
        catalog_log_dir(data_dir, shard, num_shards),
        writer=True,
        fsync=config.storage.fsync,
        segment_bytes=config.storage.catalog_segment_bytes,
        event_type=CatalogEvent,
        lock_wait_s=config.storage.lock_wait_s,
    )
    return catalog, log, preloaded, log.replay(catalog.apply)


# max_restarts=-1: a restart re-reads the posts table and replays the log, always to the same state;
# out of order: see UserStoreShard
@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=1, allow_out_of_order_execution=True)
class PostCatalogShard:
    """One shard of the post catalog (see the module docstring)."""

    def __init__(self, config: XServeConfig, shard: int, num_shards: int, now_ms: int) -> None:
        self._enc = msgspec.msgpack.Encoder()  # per instance: Ray may pickle the class by value
        self._shard, self._num_shards = shard, num_shards
        self._catalog, self._log, self.preloaded, self.replayed = open_catalog(config, shard, num_shards, now_ms)
        self._counters = PostCounters(config.popular.counted_actions, config.mixer.max_post_age_ms,
                                      config.popular.refresh_ms)

    def stats(self) -> dict[str, Any]:
        c = self._catalog
        return {"catalog": repr(c), "preloaded": self.preloaded, "replayed": self.replayed, "hits": c.hits, "misses": c.misses,
                "counters": repr(self._counters)}

    def get(self, post_ids: Sequence[int]) -> bytes:
        return self._enc.encode(self._catalog.get(post_ids))

    def quotes_of(self, post_id: int) -> list[tuple[int, int]]:
        return self._catalog.quotes_of(post_id)

    def apply(self, events: Sequence[CatalogEvent]) -> None:
        """Log then apply; durable when this returns."""
        self._log.append(events, now_ms())
        for event in events:
            self._catalog.apply(event)

    def trim(self, now_ms: int) -> int:
        self._counters.trim(now_ms)
        return self._catalog.trim(now_ms)

    # counters: soft state, not logged (docs/mixer.md, "Popular posts")

    def count_engagements(self, engagements: Sequence[Engagement]) -> int:
        return sum(self._counters.record_engagement(e) for e in engagements)

    def count_served(self, viewer_id: int, posts: Sequence[ServedPostRef], at_ms: int) -> int:
        return self._counters.record_served(viewer_id, posts, at_ms)

    def post_stats(self, post_ids: Sequence[int], now_ms: int) -> bytes:
        return self._enc.encode(self._counters.stats(post_ids, now_ms))

    def impression_counts(self, post_ids: Sequence[int], now_ms: int) -> dict[int, int]:
        return self._counters.impressions(post_ids, now_ms)

    def popular(self, req: PopularRequest) -> bytes:
        return self._enc.encode(self._counters.popular(req))
