"""``ServiceGraph``: the ingress's view of every service, and the For You pipeline wired to them.

Stateful parts are named, detached Ray actors, so every ingress replica shares
one user store, one post catalog and one Thunder; ``names`` (from ``app.py``)
says which, and :mod:`xserve.actors.stateful` attaches to them (creating them
on first use). Retrieval and the ranker are Serve deployments reached through
their handles. Each service is reached through its client in
:mod:`xserve.deployments.clients`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from xserve import clock
from xserve.actors.calls import uncancelled
from xserve.actors.naming import ActorNames
from xserve.actors.stateful import (
    ActorPlacement,
    ad_inventory,
    post_catalog_shards,
    thunder_actors,
    user_store_shards,
)
from xserve.config import XServeConfig
from xserve.deployments.clients import (
    AdsHandleClient,
    PostCatalogClient,
    RankerHandleClient,
    RetrievalHandleClient,
    ThunderClient,
    UserStoreClient,
)
from xserve.deployments.metrics import RayMetricsSink
from xserve.loop.impressions import ImpressionCounts
from xserve.mixer import ForYouClients, ForYouQuery, build_for_you_pipeline, feed_response
from xserve.mixer.side_effects import ServedHistorySideEffect
from xserve.schema import FeedRequest, FeedResponse, UserQueryData
from xserve.users.last_known import LastKnownViewers

__all__ = ["ServiceGraph"]

log = logging.getLogger("xserve.services")


class ServiceGraph:
    """Clients for users, posts, Thunder, retrieval and the ranker, plus the pipeline built over them."""

    def __init__(
        self,
        config: XServeConfig,
        names: ActorNames,
        retrieval: Any,
        ranker: Any,
        now_ms: Callable[[], int] = clock.now_ms,
    ) -> None:
        self.now_ms = now_ms
        s = config.serving
        self.user_shards = user_store_shards(config, names)
        self.post_shards = post_catalog_shards(config, names, now_ms())
        last_known = LastKnownViewers(s.last_known_viewers_bytes)
        # the pipeline's clients fail at once on an unreachable shard (the stage degrades); the API's wait for it
        self.users = UserStoreClient(self.user_shards, config.mixer.history_length, last_known,
                                     trim_block=config.mixer.history_trim_block)
        self.posts = PostCatalogClient(self.post_shards, self.users)
        wait_s = s.store_unavailable_wait_s
        self.api_users = UserStoreClient(self.user_shards, config.mixer.history_length, last_known, wait_s)
        self.api_posts = PostCatalogClient(self.post_shards, self.api_users, wait_s)
        thunder = thunder_actors(config.thunder, config.storage, names, detached=True, placement=ActorPlacement.of(s))
        self.thunder = ThunderClient(config.thunder, thunder.shards, thunder.ingest)
        self.retrieval = RetrievalHandleClient(retrieval)
        self._retrieval_handle = retrieval
        self.ranker = RankerHandleClient(ranker)
        self._ranker_handle = ranker
        self.sinks = [self.thunder, _RetrievalSink(retrieval)]  # consumers of the post catalog's logs
        self.ad_actor = ad_inventory(config, names)
        self.ads = AdsHandleClient(self.ad_actor)  # the feed's: fails at once (no ads) when unreachable
        self.api_ads = AdsHandleClient(self.ad_actor, wait_s)
        self._metrics = RayMetricsSink()
        self.impression_counts = ImpressionCounts()  # this replica's feeds and their impression logging
        self._trim_interval_s = config.thunder.trim_interval_s
        self._maintenance: asyncio.Task[None] | None = None
        self.rebuild_pipeline(config)

    def rebuild_pipeline(self, config: XServeConfig) -> None:
        clients = ForYouClients(
            user_data=self.users, in_network=self.thunder, retrieval=self.retrieval, post_data=self.posts, ranker=self.ranker,
            post_stats=self.posts, impressions=self.posts,  # the catalog's counters; impressions = the served posts
            ads=self.ads,
        )
        self.pipeline = build_for_you_pipeline(config, clients, self._metrics)
        for effect in self.pipeline.side_effects:  # the counts outlive a reconfigure's new pipeline
            if isinstance(effect, ServedHistorySideEffect):
                effect.counts = self.impression_counts

    async def run_pipeline(
        self, req: FeedRequest, request_id: str, now_ms: int, viewer_data: UserQueryData | None = None
    ) -> FeedResponse:
        """Run the For You pipeline for ``req``; ``viewer_data`` is the viewer's user-store answer when the
        caller has it already (the query hydrators then make no user-store call)."""
        pipeline = self.pipeline  # a reconfigure mid-request does not change this request's pipeline
        result = await pipeline.execute(ForYouQuery.from_request(req, request_id, now_ms, viewer_data))
        if result.selected:
            self.impression_counts.served_feeds += 1
        return feed_response(result)

    async def health(self) -> dict[str, str]:
        """``"ok"`` or the error, per part; bounded by a 5 s timeout."""
        checks: dict[str, Any] = {
            **{f"users[{i}]": uncancelled(a.stats.remote()) for i, a in enumerate(self.user_shards)},
            **{f"posts[{i}]": uncancelled(a.stats.remote()) for i, a in enumerate(self.post_shards)},
            "thunder": self.thunder.stats(),
            "retrieval": self._retrieval_handle.stats.remote(),
            "ranker": self._ranker_handle.stats.remote(),
            "ads": self.ads.stats(),
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
        return {"users": users, "posts": posts, "ranker_context_reuse": self.ranker.stats(),
                "impressions": self.impression_counts.as_dict(), "ads": await self.ads.stats(),
                # the live embedding version and its user tower (a switch shows here once a replica took it)
                "retrieval": await self._retrieval_handle.stats.remote()}

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
