"""``PostCatalogShard`` actors (posts sharded by id) and ``PostDataClient``, the mixer's post-data seam.

A shard is a thin shell around :class:`xserve.posts.PostCatalog`: the
posts table is its read-through store (warmed with the posts young enough to
be candidates), and its event log (``<data_dir>/hydration/shard-<i>-of-<n>/``)
holds the post writes, label changes and deletions it has accepted, replayed on
restart. A write is logged (fsynced) before it is applied and acknowledged.
These logs are the source of truth for posts: Thunder and retrieval consume
them through :func:`catalog_tail` (``docs/reliability.md``, "Durability").

``PostDataClient`` answers the mixer's several ``get_posts`` calls of one
request with one call per shard: the ingress opens a per-request cache
(:func:`request_cache`), and concurrent lookups of the same ids share one
in-flight fetch. Author profiles come from the user store.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import ray

from xserve.actors.calls import uncancelled
from xserve.actors.users import UserShardsClient
from xserve.clock import now_ms
from xserve.config import XServeConfig
from xserve.posts import CatalogEvent, PostCatalog
from xserve.schema import Post, PostCreated, PostDeleted, PostLabelsSet, QuotedPostDeleted, UserProfile
from xserve.sharding import group_by_shard, shard_for
from xserve.storage.layout import SHARD_LOG_GLOB, DataDirLayout
from xserve.storage.log.event_log import EventLog
from xserve.storage.log.log_tail import LogTail

__all__ = [
    "PostDataClient",
    "PostCatalogShard",
    "RequestPostCache",
    "catalog_log_dir",
    "catalog_tail",
    "close_request_cache",
    "request_cache",
]


def catalog_log_dir(data_dir: str | Path, shard: int, num_shards: int) -> Path:
    """The event log of one post-catalog shard."""
    return DataDirLayout(data_dir).catalog_log(shard, num_shards)


def catalog_tail(data_dir: str | Path, watermark: str | Path) -> LogTail:
    """A consumer of every post-catalog shard's log (any shard count, past or present), from ``watermark``."""
    return LogTail(DataDirLayout(data_dir).catalog_logs, SHARD_LOG_GLOB, CatalogEvent, watermark)

_POSTS_DEC = msgspec.msgpack.Decoder(dict[int, Post])


# max_restarts=-1: a restart re-reads the posts table and replays the log, always to the same state;
# out of order: see UserStoreShard
@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=1, allow_out_of_order_execution=True)
class PostCatalogShard:
    """One shard of the post catalog (see the module docstring)."""

    def __init__(self, config: XServeConfig, shard: int, num_shards: int, now_ms: int) -> None:
        self._enc = msgspec.msgpack.Encoder()  # per instance: Ray may pickle the class by value
        self._shard, self._num_shards = shard, num_shards
        data_dir = Path(config.storage.data_dir)
        lookup = None
        self.preloaded = 0
        if DataDirLayout(data_dir).table("posts").exists():
            from xserve.storage.lance.post_lookup import PostTableLookup

            lookup = PostTableLookup(data_dir)
        retention = config.mixer.max_post_age_ms
        self._catalog = PostCatalog(lookup, config.serving.hydration_cache_size, retention)
        if lookup is not None:
            recent = [p for p in lookup.recent(now_ms - retention) if shard_for(p.post_id, num_shards) == shard]
            self.preloaded = self._catalog.preload(recent)
        self._log = EventLog(
            catalog_log_dir(data_dir, shard, num_shards),
            writer=True,
            fsync=config.storage.fsync,
            event_type=CatalogEvent,
            lock_wait_s=config.storage.lock_wait_s,
        )
        self.replayed = self._log.replay(self._catalog.apply)

    def stats(self) -> dict[str, Any]:
        c = self._catalog
        return {"catalog": repr(c), "preloaded": self.preloaded, "replayed": self.replayed, "hits": c.hits, "misses": c.misses}

    def get(self, post_ids: Sequence[int]) -> bytes:
        return self._enc.encode(self._catalog.get(post_ids))

    def apply(self, events: Sequence[CatalogEvent]) -> None:
        """Log then apply; durable when this returns."""
        self._log.append(events, now_ms())
        for event in events:
            self._catalog.apply(event)

    def trim(self, now_ms: int) -> int:
        return self._catalog.trim(now_ms)


class RequestPostCache:
    """Posts fetched during one request, and the fetches in flight (keyed by post id)."""

    __slots__ = ("pending", "posts")

    def __init__(self) -> None:
        self.posts: dict[int, Post | None] = {}  # None = looked up, absent
        self.pending: dict[int, asyncio.Future[None]] = {}


_cache: contextvars.ContextVar[RequestPostCache | None] = contextvars.ContextVar("xserve_post_cache", default=None)


def request_cache() -> contextvars.Token:
    """Open a per-request post cache in the current context (the ingress, before running the pipeline)."""
    return _cache.set(RequestPostCache())


def close_request_cache(token: contextvars.Token) -> None:
    _cache.reset(token)


class PostDataClient:
    """Satisfies the mixer's ``PostDataClient``; also the write path's entry to the post catalog."""

    def __init__(self, shards: Sequence[Any], users: UserShardsClient) -> None:
        self._shards = list(shards)
        self._users = users

    async def _fetch(self, post_ids: Sequence[int]) -> dict[int, Post]:
        by_shard = group_by_shard(post_ids, len(self._shards))
        answers = await asyncio.gather(*(uncancelled(self._shards[s].get.remote(ids)) for s, ids in by_shard.items()))
        out: dict[int, Post] = {}
        for answer in answers:
            out.update(_POSTS_DEC.decode(answer))
        return out

    async def get_posts(self, post_ids: Sequence[int]) -> dict[int, Post]:
        cache = _cache.get()
        if cache is None:
            return await self._fetch(post_ids)
        wanted = set(post_ids)
        new = [pid for pid in wanted if pid not in cache.posts and pid not in cache.pending]
        waits = {cache.pending[pid] for pid in wanted if pid in cache.pending}
        if new:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            for pid in new:
                cache.pending[pid] = fut
            try:
                found = await self._fetch(new)
                for pid in new:
                    cache.posts[pid] = found.get(pid)
                fut.set_result(None)
            except BaseException as exc:
                fut.set_exception(exc)
                fut.exception()  # retrieved: waiters re-raise it, no "never retrieved" warning
                raise
            finally:
                for pid in new:
                    cache.pending.pop(pid, None)
        if waits:
            await asyncio.gather(*waits)
        return {pid: post for pid in wanted if (post := cache.posts.get(pid)) is not None}

    async def get_user_profiles(self, user_ids: Sequence[int]) -> dict[int, UserProfile]:
        return await self._users.profiles(user_ids)

    async def write(self, events: Sequence[CatalogEvent]) -> None:
        """Log and apply ``events`` on the shards of their posts; durable when this returns."""
        by_shard = group_by_shard(events, len(self._shards), _post_id)
        await asyncio.gather(*(uncancelled(self._shards[s].apply.remote(evs)) for s, evs in by_shard.items()))


def _post_id(event: CatalogEvent) -> int:
    match event:
        case PostCreated(post=post):
            return post.post_id
        case QuotedPostDeleted(quoting_post_id=pid) | PostDeleted(post_id=pid) | PostLabelsSet(post_id=pid):
            return pid
    raise TypeError(f"not a catalog event: {type(event).__name__}")
