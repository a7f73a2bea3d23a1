"""``ServiceGraph``: the ingress's view of every service, and the For You pipeline wired to them.

Stateful parts are named, detached Ray actors (``get_if_exists``), so every
ingress replica shares one user store, one post catalog and one Thunder; they
are named after the data directory, so two apps on one cluster never share
state by accident. :func:`kill_named_actors` removes them (tests, teardown).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import ray

from xserve import clock
from xserve.actors.calls import uncancelled
from xserve.actors.naming import NAMESPACE, ActorNames
from xserve.actors.posts import PostDataClient, PostCatalogShard
from xserve.actors.users import UserShardsClient, UserStoreShard
from xserve.config import XServeConfig
from xserve.deployments.metrics import RayMetricsSink
from xserve.mixer import ForYouClients, ForYouQuery, build_for_you_pipeline, feed_response
from xserve.schema import FeedRequest, FeedResponse
from xserve.users.last_known import LastKnownViewers

__all__ = ["ServiceGraph", "kill_named_actors"]

log = logging.getLogger("xserve.services")


def _named(cls: Any, name: str, *args: Any) -> Any:
    return cls.options(name=name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True).remote(*args)


def kill_named_actors(config: XServeConfig) -> int:
    """Kill every detached actor this config's graph created; returns how many."""
    names = ActorNames.of(config.storage.data_dir)
    killed = 0
    for info in ray.util.list_named_actors(all_namespaces=True):
        if names.owns(info["name"]):
            try:
                ray.kill(ray.get_actor(info["name"], namespace=info["namespace"]), no_restart=True)
                killed += 1
            except ValueError:
                pass
    return killed


class ServiceGraph:
    """Clients for users, posts, Thunder, retrieval and the ranker, plus the pipeline built over them."""

    def __init__(
        self, config: XServeConfig, retrieval: Any, ranker: Any, now_ms: Callable[[], int] = clock.now_ms
    ) -> None:
        from xserve.actors.thunder import ThunderClient
        from xserve.deployments.ranker import RankerHandleClient
        from xserve.deployments.retrieval import RetrievalHandleAdapter

        self.now_ms = now_ms
        names = ActorNames.of(config.storage.data_dir)
        s = config.serving
        self.user_shards = [
            _named(UserStoreShard, names.user_shard(i, s.num_user_shards), config, i, s.num_user_shards)
            for i in range(s.num_user_shards)
        ]
        n = s.num_hydration_shards
        self.post_shards = [
            _named(PostCatalogShard, names.post_shard(i, n), config, i, n, now_ms()) for i in range(n)
        ]
        self.users = UserShardsClient(
            self.user_shards, config.mixer.history_length, LastKnownViewers(s.last_known_viewers_bytes)
        )
        self.posts = PostDataClient(self.post_shards, self.users)
        self.thunder = ThunderClient.start(config.thunder, config.storage, detached=True)
        self.retrieval = RetrievalHandleAdapter(retrieval)
        self._retrieval_handle = retrieval
        self.ranker = RankerHandleClient(ranker)
        self._ranker_handle = ranker
        self.sinks = [self.thunder, _RetrievalSink(retrieval)]  # consumers of the post catalog's logs
        self._metrics = RayMetricsSink()
        self._trim_interval_s = config.thunder.trim_interval_s
        self._maintenance: asyncio.Task[None] | None = None
        self.rebuild_pipeline(config)

    def rebuild_pipeline(self, config: XServeConfig) -> None:
        clients = ForYouClients(
            user_data=self.users, in_network=self.thunder, retrieval=self.retrieval, post_data=self.posts, ranker=self.ranker
        )
        self.pipeline = build_for_you_pipeline(config, clients, self._metrics)

    async def run_pipeline(self, req: FeedRequest, request_id: str, now_ms: int) -> FeedResponse:
        pipeline = self.pipeline  # a reconfigure mid-request does not change this request's pipeline
        result = await pipeline.execute(ForYouQuery.from_request(req, request_id, now_ms))
        return feed_response(result)

    async def health(self) -> dict[str, str]:
        """``"ok"`` or the error, per part; bounded by a 5 s timeout."""
        checks: dict[str, Any] = {
            **{f"users[{i}]": uncancelled(a.stats.remote()) for i, a in enumerate(self.user_shards)},
            **{f"posts[{i}]": uncancelled(a.stats.remote()) for i, a in enumerate(self.post_shards)},
            "thunder": self.thunder.stats(),
            "retrieval": self._retrieval_handle.stats.remote(),
            "ranker": self._ranker_handle.stats.remote(),
            # ready only once Thunder and retrieval have read every post write the catalog holds (after a restart)
            "catch_up": asyncio.gather(*(sink.catch_up() for sink in self.sinks)),
        }

        async def one(aw: Any) -> str:
            try:
                await asyncio.wait_for(_awaitable(aw), timeout=5.0)
                return "ok"
            except Exception as exc:  # noqa: BLE001 - health reports, never raises
                return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]

        results = await asyncio.gather(*(one(aw) for aw in checks.values()))
        return dict(zip(checks, results))

    async def stats(self) -> dict[str, Any]:
        users = await asyncio.gather(*(a.stats.remote() for a in self.user_shards))
        posts = await asyncio.gather(*(a.stats.remote() for a in self.post_shards))
        return {"users": users, "posts": posts}

    async def drain(self) -> None:
        await self.pipeline.drain()

    def ensure_maintenance(self) -> None:
        """Start (once per replica) the loop that trims old live posts from the post catalog.

        It first has Thunder and retrieval catch up with the catalog (after a
        restart, before anyone asked ``/healthz``); from then on they keep up on their own timers.
        """
        if self._maintenance is None or self._maintenance.done():
            self._maintenance = asyncio.get_running_loop().create_task(self._maintain())

    async def _maintain(self) -> None:
        results = await asyncio.gather(*(sink.catch_up() for sink in self.sinks), return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                log.warning("catching up with the post catalog failed (retried by the consumers' timers): %s", result)
        while True:
            await asyncio.sleep(self._trim_interval_s)
            try:
                await asyncio.gather(*(a.trim.remote(self.now_ms()) for a in self.post_shards))
            except Exception:  # noqa: BLE001 - retried next interval; serving is unaffected
                log.warning("post catalog trim failed", exc_info=True)


async def _awaitable(aw: Any) -> Any:
    return await aw


class _RetrievalSink:
    """Retrieval as a post sink: its indexer reads the post catalog's logs (deletes hidden at once)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    async def catch_up(self) -> None:
        await self._handle.catch_up.remote()
