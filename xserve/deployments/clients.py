"""Every handle adapter: Ray actor and Serve deployment handles as the plain async clients callers use.

Each class holds handles and makes the Ray calls, nothing more: the logic they
drive is in pure classes (:class:`~xserve.users.writes.ShardedWrite`,
:mod:`xserve.thunder.fanout`, :class:`~xserve.retrieval.fanout.RetrievalFanout`).
They satisfy the mixer's Protocols (``xserve.mixer.protocols``) and are the
write path's entry to the stores.

* :class:`UserStoreClient`: the ``UserStoreShard`` actors (the mixer's ``UserDataClient``);
* :class:`PostCatalogClient`: the ``PostCatalogShard`` actors (the mixer's ``PostDataClient``, ``PostStatsClient``
  and, counting served posts, ``ImpressionCountClient``);
* :class:`ThunderClient`: Thunder's shard replicas and ingest actor (the mixer's ``InNetworkClient``);
* :class:`RetrievalShardClient`: one ``RetrievalShard`` actor as a shard of the retrieval fan-out;
* :class:`RetrievalHandleClient`: the ``Retrieval`` deployment (the mixer's ``RetrievalClient``);
* :class:`RankerHandleClient`: the ``Ranker`` deployment (the mixer's ``RankerClient``);
* :class:`AdsHandleClient`: the ``AdInventoryActor`` (the mixer's ``AdsClient``, and the ads API's writes).

Calls to actors go through :func:`~xserve.actors.calls.uncancelled`: a caller
that gives up does not cancel the actor's task.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Collection, Sequence
from typing import Any

import msgspec
import numpy as np
import ray

from xserve.actors.calls import resent, uncancelled
from xserve.config import ThunderConfig
from xserve.phoenix.serving.kv_cache import CacheStats
from xserve.posts import CatalogEvent, event_post_id, merge_popular
from xserve.retrieval.merge import hits_to_posts
from xserve.schema import (
    Ad,
    AdDelivered,
    AdSlate,
    Engagement,
    FeedImpressions,
    FeedSeen,
    HistoryItem,
    IngestResult,
    InNetworkRequest,
    InNetworkResponse,
    LightPost,
    PopularPost,
    PopularRequest,
    Post,
    PostStats,
    RankRequest,
    RankResponse,
    RetrievalRequest,
    RetrievedPost,
    Served,
    ServedPostRef,
    ShardHits,
    UserEvent,
    UserFeatures,
    UserProfile,
    UserQueryData,
)
from xserve.sharding import group_by_shard, shard_for
from xserve.thunder.fanout import first_to_answer, merge_answered, shards_to_ask
from xserve.thunder.replica import ThunderAtCapacity
from xserve.users.last_known import LastKnownViewers
from xserve.users.writes import Refusal, ShardedWrite

__all__ = [
    "AdsHandleClient",
    "PostCatalogClient",
    "RankerHandleClient",
    "RetrievalHandleClient",
    "RetrievalShardClient",
    "StoreUnavailable",
    "ThunderClient",
    "UserStoreClient",
    "UserStoreUnavailable",
]

_QUERY_DEC = msgspec.msgpack.Decoder(UserQueryData | None)
_PROFILES_DEC = msgspec.msgpack.Decoder(dict[int, UserProfile])
_POSTS_DEC = msgspec.msgpack.Decoder(dict[int, Post])
_STATS_DEC = msgspec.msgpack.Decoder(dict[int, PostStats])
_POPULAR_DEC = msgspec.msgpack.Decoder(list[PopularPost])


class UserStoreUnavailable(Exception):
    """The viewer's shard did not answer in time and no earlier answer for the viewer is kept."""


class StoreUnavailable(Exception):
    """A user-store or post-catalog shard stayed unreachable for the client's ``unavailable_wait_s``."""


async def _store_call(make_call: Any, wait_s: float) -> Any:
    """A shard call: failing at once when its actor is unreachable (``wait_s`` 0: the feed's stages, which
    degrade), or sent again for up to ``wait_s`` (the API's writes and reads), then :class:`StoreUnavailable`."""
    if wait_s <= 0:
        return await uncancelled(make_call())
    try:
        return await resent(make_call, wait_s)
    except ray.exceptions.ActorUnavailableError as exc:
        raise StoreUnavailable(f"a store shard stayed unreachable for {wait_s:g} s ({type(exc).__name__})") from None


class UserStoreClient:
    """The user store's shard actors: the mixer's ``UserDataClient``, and the write path's entry to the store.

    ``unavailable_wait_s``: how long a call resends to a shard whose actor is unreachable (0: it fails at
    once; see :func:`~xserve.actors.calls.resent`). ``trim_block``: the history is the context window trimmed
    in blocks of this many entries (``xserve.users.history.window_start``; the feed's client passes
    ``mixer.history_trim_block``, the API's 1: the newest ``history_length``).
    """

    def __init__(
        self, shards: Sequence[Any], history_length: int, last_known: LastKnownViewers | None = None,
        unavailable_wait_s: float = 0.0, trim_block: int = 1,
    ) -> None:
        self._shards = list(shards)
        self._history_length = history_length
        self._trim_block = trim_block
        self.last_known = last_known if last_known is not None else LastKnownViewers(0)  # for viewer_data
        self.unavailable_wait_s = unavailable_wait_s

    def _shard(self, user_id: int) -> Any:
        return self._shards[shard_for(user_id, len(self._shards))]

    async def query_data(self, user_id: int) -> UserQueryData | None:
        shard = self._shard(user_id)
        blob = await _store_call(lambda: shard.query_data.remote(user_id, self._history_length, self._trim_block),
                                 self.unavailable_wait_s)
        return _QUERY_DEC.decode(blob)

    async def viewer_data(self, user_id: int, stale_after_s: float, give_up_after_s: float) -> tuple[UserQueryData | None, bool]:
        """The viewer's data and whether it is stale (``None``: no such user).

        Waits ``stale_after_s`` for the shard; if it has not answered (or failed) by then and an earlier
        answer for the viewer is kept, returns that one with ``True``. Without one, waits up to
        ``give_up_after_s`` in all, then raises :class:`UserStoreUnavailable`.
        """
        shard = self._shard(user_id)
        call = asyncio.ensure_future(
            uncancelled(shard.query_data.remote(user_id, self._history_length, self._trim_block)))
        try:
            done, _ = await asyncio.wait({call}, timeout=stale_after_s)
            if not (done and call.exception() is None) and (stale := self.last_known.get(user_id)) is not None:
                return _QUERY_DEC.decode(stale), True
            if not done:
                await asyncio.wait({call}, timeout=max(give_up_after_s - stale_after_s, 0.0))
            if not call.done() or call.exception() is not None:
                why = type(call.exception()).__name__ if call.done() else f"no answer in {give_up_after_s:g} s"
                raise UserStoreUnavailable(f"the user store shard of user {user_id} is unavailable ({why})")
            blob = call.result()
        finally:
            if not call.done():
                call.cancel()
        data = _QUERY_DEC.decode(blob)
        if data is not None:
            self.last_known.put(user_id, blob)
        return data, False

    async def user_features(self, user_id: int) -> UserFeatures:
        data = await self.query_data(user_id)
        return data.features if data is not None else UserFeatures()

    async def engagement_history(self, user_id: int, limit: int) -> tuple[HistoryItem, ...]:
        data = await self.query_data(user_id)
        return data.history[-limit:] if data is not None and limit > 0 else ()

    async def record_served(self, user_id: int, post_ids: Sequence[int], served_at_ms: int,
                            impressions: FeedImpressions | None = None) -> None:
        served = Served(user_id, tuple(post_ids), served_at_ms)
        if impressions is None:
            await uncancelled(self._shard(user_id).apply.remote([served], True))
        else:  # one call for both: the served ids and the feed's impressions
            await uncancelled(self._shard(user_id).record_served.remote(served, impressions))

    async def record_seen(self, reports: Sequence[FeedSeen]) -> bool:
        """Log seen reports on their viewers' shards (the impression logs); False when impressions are not logged."""
        by_shard: dict[int, list[FeedSeen]] = {}
        for r in reports:
            by_shard.setdefault(shard_for(r.viewer_id, len(self._shards)), []).append(r)
        logged = await asyncio.gather(*(
            _store_call(lambda shard=self._shards[s], batch=batch: shard.record_seen.remote(batch), self.unavailable_wait_s)
            for s, batch in by_shard.items()))
        return all(logged)

    async def served_history(self, user_id: int) -> tuple[int, ...]:
        data = await self.query_data(user_id)
        return data.served_ids if data is not None else ()

    async def profiles(self, user_ids: Sequence[int]) -> dict[int, UserProfile]:
        by_shard = group_by_shard(user_ids, len(self._shards))
        wait_s = self.unavailable_wait_s
        answers = await asyncio.gather(*(
            _store_call(lambda shard=self._shards[s], ids=ids: shard.profiles.remote(ids), wait_s)
            for s, ids in by_shard.items()
        ))
        out: dict[int, UserProfile] = {}
        for answer in answers:
            out.update(_PROFILES_DEC.decode(answer))
        return out

    async def write(self, events: Sequence[UserEvent]) -> None:
        """Apply ``events`` on every shard they touch, all or nothing (:class:`~xserve.users.writes.ShardedWrite`);
        raises :class:`~xserve.users.writes.WriteRefused`."""
        await ShardedWrite.plan(events, len(self._shards)).run(_UserShardCalls(self._shards, self.unavailable_wait_s))


class _UserShardCalls:
    """The shard actors as :class:`~xserve.users.writes.ShardedWrite` reaches them (``UserShardCalls``)."""

    def __init__(self, shards: list[Any], unavailable_wait_s: float) -> None:
        self._shards = shards
        self._wait_s = unavailable_wait_s

    async def check(self, shard: int, events: Sequence[UserEvent]) -> Refusal | None:
        return await _store_call(lambda: self._shards[shard].check.remote(list(events)), self._wait_s)

    async def apply(self, shard: int, events: Sequence[UserEvent], checked: bool, log: bool) -> Refusal | None:
        return await _store_call(lambda: self._shards[shard].apply.remote(list(events), checked, log), self._wait_s)


class PostCatalogClient:
    """The post catalog's shard actors: the mixer's ``PostDataClient``, and the write path's entry to the catalog.

    One call per shard per ``get_posts``; a request's lookups share those calls
    through its :class:`~xserve.posts.request_cache.RequestPostCache`. Author profiles come from the user store.
    """

    def __init__(self, shards: Sequence[Any], users: UserStoreClient, unavailable_wait_s: float = 0.0) -> None:
        self._shards = list(shards)
        self._users = users
        self.unavailable_wait_s = unavailable_wait_s  # as UserStoreClient's

    async def get_posts(self, post_ids: Sequence[int]) -> dict[int, Post]:
        by_shard = group_by_shard(post_ids, len(self._shards))
        wait_s = self.unavailable_wait_s
        answers = await asyncio.gather(*(
            _store_call(lambda shard=self._shards[s], ids=ids: shard.get.remote(ids), wait_s)
            for s, ids in by_shard.items()
        ))
        out: dict[int, Post] = {}
        for answer in answers:
            out.update(_POSTS_DEC.decode(answer))
        return out

    async def get_user_profiles(self, user_ids: Sequence[int]) -> dict[int, UserProfile]:
        return await self._users.profiles(user_ids)

    async def quotes_of(self, post_id: int) -> list[tuple[int, int]]:
        """``(quoting post id, its author)`` of the recent quotes of ``post_id``: a quote lives on its own
        shard, so every shard is asked (one call each; deletes are rare)."""
        wait_s = self.unavailable_wait_s
        answers = await asyncio.gather(*(
            _store_call(lambda shard=shard: shard.quotes_of.remote(post_id), wait_s) for shard in self._shards
        ))
        return sorted(q for answer in answers for q in answer)

    # ---------------------------------------------------------------- counters (the popular source, cold start)

    async def record_engagements(self, engagements: Sequence[Engagement]) -> None:
        """Count engagements (each with its post's ``post_created_at_ms``) on their posts' shards."""
        by_shard = group_by_shard(engagements, len(self._shards), lambda e: e.post_id)
        await asyncio.gather(*(uncancelled(self._shards[s].count_engagements.remote(es)) for s, es in by_shard.items()))

    async def record_impressions(self, viewer_id: int, posts: Sequence[ServedPostRef], at_ms: int) -> None:
        by_shard = group_by_shard(posts, len(self._shards), lambda p: p.post_id)
        await asyncio.gather(*(
            uncancelled(self._shards[s].count_served.remote(viewer_id, ps, at_ms)) for s, ps in by_shard.items()
        ))

    async def impression_counts(self, post_ids: Sequence[int], now_ms: int) -> dict[int, int]:
        by_shard = group_by_shard(post_ids, len(self._shards))
        answers = await asyncio.gather(*(
            uncancelled(self._shards[s].impression_counts.remote(ids, now_ms)) for s, ids in by_shard.items()
        ))
        return {pid: n for answer in answers for pid, n in answer.items()}

    async def post_stats(self, post_ids: Sequence[int], now_ms: int) -> dict[int, PostStats]:
        by_shard = group_by_shard(post_ids, len(self._shards))
        answers = await asyncio.gather(*(
            uncancelled(self._shards[s].post_stats.remote(ids, now_ms)) for s, ids in by_shard.items()
        ))
        return {pid: st for answer in answers for pid, st in _STATS_DEC.decode(answer).items()}

    async def popular_posts(self, req: PopularRequest) -> list[PopularPost]:
        """Every shard's best ``max_results``, merged (a post lives on one shard, so no duplicates)."""
        answers = await asyncio.gather(*(uncancelled(shard.popular.remote(req)) for shard in self._shards))
        return merge_popular((_POPULAR_DEC.decode(a) for a in answers), req.max_results)

    async def write(self, events: Sequence[CatalogEvent]) -> None:
        """Log and apply ``events`` on the shards of their posts; durable when this returns."""
        by_shard = group_by_shard(events, len(self._shards), event_post_id)
        wait_s = self.unavailable_wait_s
        await asyncio.gather(*(
            _store_call(lambda shard=self._shards[s], evs=evs: shard.apply.remote(evs), wait_s)
            for s, evs in by_shard.items()
        ))


# a replica at capacity, or restarting after a crash, passes the query to the shard's next replica
_PASS_TO_NEXT_REPLICA = (ThunderAtCapacity, ray.exceptions.ActorUnavailableError, ray.exceptions.ActorDiedError)


class ThunderClient:
    """Thunder's actors: queries fan out to the shards owning followed authors; writes go to the ingest actor.

    Satisfies the mixer's in-network Protocol: ``await client.in_network_posts(req)``.
    """

    def __init__(self, config: ThunderConfig, shards: Sequence[Sequence[Any]], ingest: Any) -> None:
        if len(shards) != config.num_shards:
            raise ValueError(f"expected {config.num_shards} shards of replicas, got {len(shards)}")
        self.config = config
        self._shards = [list(replicas) for replicas in shards]
        self._ingest = ingest
        self._turn = [itertools.count() for _ in shards]

    def actors(self) -> list[Any]:
        return [h for replicas in self._shards for h in replicas] + [self._ingest]

    async def ingest(self, items: Sequence[Any], now_ms: int | None = None) -> IngestResult:
        """Validate, log durably and apply ``items`` (see :class:`~xserve.thunder.ingest.Ingestor`)."""
        return await uncancelled(self._ingest.ingest.remote(list(items), now_ms))

    async def catch_up(self) -> int:
        """Have the ingest actor consume the post catalog's logs up to now (durable in Thunder on return)."""
        return await self._ingest.catch_up.remote()

    async def in_network_posts(self, req: InNetworkRequest, now_ms: int | None = None) -> InNetworkResponse:
        """The merged answer of the shards owning a followed author; a shard whose every replica fails, or that
        has not answered within ``shard_timeout_s``, is left out and named (:mod:`xserve.thunder.fanout`)."""
        targets = shards_to_ask(req, self.config)
        outcomes = await asyncio.gather(*(self._ask(s, req, now_ms) for s in targets), return_exceptions=True)
        return merge_answered(targets, outcomes, req, self.config)

    async def _ask(self, shard: int, req: InNetworkRequest, now_ms: int | None) -> list[LightPost]:
        replicas = self._shards[shard]
        start = next(self._turn[shard])
        order = [replicas[(start + i) % len(replicas)] for i in range(len(replicas))]  # round-robin
        calls = [lambda h=h: uncancelled(h.in_network_posts.remote(req, now_ms)) for h in order]
        return await first_to_answer(calls, self.config.shard_timeout_s, _PASS_TO_NEXT_REPLICA)

    async def stats(self) -> list[dict[str, int]]:
        """Each shard replica's stats (shard-major order), then the ingest actor's."""
        return list(await asyncio.gather(*(uncancelled(h.stats.remote()) for h in self.actors())))


class RetrievalShardClient:
    """One ``RetrievalShard`` actor as a shard of :class:`~xserve.retrieval.fanout.RetrievalFanout`."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    async def search_async(
        self, vector: np.ndarray, k: int, now_ms: int, exclude_ids: Collection[int] = (), version: str | None = None
    ) -> ShardHits:
        return await uncancelled(self._handle.search.remote(vector, k, now_ms, exclude_ids, version))


class RetrievalHandleClient:
    """A ``Retrieval`` deployment handle as the mixer's retrieval Protocol."""

    def __init__(self, handle: Any):
        self._handle = handle

    def __repr__(self) -> str:
        return "RetrievalHandleClient(Retrieval)"

    async def retrieve(self, req: RetrievalRequest) -> list[RetrievedPost]:
        return hits_to_posts(await self._handle.retrieve_hits.remote(req))  # arrays over Ray, Structs here


class RankerHandleClient:
    """A ``Ranker`` deployment handle as the mixer's ``RankerClient`` Protocol.

    The call carries the ``RankRequest`` as its first argument: the Ranker's request router
    (``ranker_router.ViewerAffinityRouter``) routes by its ``user_id``. ``context_reuse`` counts, per
    replica, how much of each context the replica read from its KV cache (from the responses).
    """

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self.context_reuse: dict[str, CacheStats] = {}  # replica -> contexts it scored for this client

    async def rank(self, req: RankRequest) -> RankResponse:
        resp = await self._handle.rank.remote(req)
        if resp.context_tokens:  # 0: a backend without a KV cache (vLLM)
            self.context_reuse.setdefault(resp.replica, CacheStats()).record(resp.context_tokens,
                                                                           resp.cached_context_tokens)
        return resp

    def stats(self) -> dict[str, dict[str, float]]:
        """``context_reuse`` per replica, as ``CacheStats.as_dict`` (no evictions: only replicas see those)."""
        return {replica: s.as_dict() for replica, s in sorted(self.context_reuse.items())}


class AdsHandleClient:
    """The ``AdInventoryActor`` as the mixer's ``AdsClient`` Protocol and the ads API's store.

    ``unavailable_wait_s`` as :class:`UserStoreClient`'s: 0 for the feed's stages (they degrade: no ads),
    longer for the API's writes.
    """

    def __init__(self, actor: Any, unavailable_wait_s: float = 0.0) -> None:
        self._actor = actor
        self._wait_s = unavailable_wait_s

    async def ad_slate(self, viewer_id: int) -> AdSlate:
        return await _store_call(lambda: self._actor.slate.remote(viewer_id), self._wait_s)

    async def record_delivery(self, delivery: AdDelivered) -> None:
        await _store_call(lambda: self._actor.deliver.remote(delivery), self._wait_s)

    async def get(self, ad_id: int) -> Ad | None:
        return await _store_call(lambda: self._actor.get.remote(ad_id), self._wait_s)

    async def put(self, ad: Ad) -> Ad:
        return await _store_call(lambda: self._actor.put.remote(ad), self._wait_s)

    async def delete(self, ad_id: int) -> tuple[int, str] | None:
        return await _store_call(lambda: self._actor.delete.remote(ad_id), self._wait_s)

    async def stats(self) -> dict[str, Any]:
        return await uncancelled(self._actor.stats.remote())
