"""In-memory, dict-backed implementations of the mixer's client Protocols (test fixtures only).

The real Thunder, ranker, retrieval and stores come from their own packages;
these hold a fixed small world so a whole feed can be computed by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from xserve.mixer import ForYouClients, ForYouQuery
from xserve.posts import PostCounters
from xserve.schema import (
    ActionScores,
    FeedImpressions,
    HistoryItem,
    InNetworkRequest,
    InNetworkResponse,
    PopularPost,
    PopularRequest,
    Post,
    PostStats,
    PostCandidate,
    RankRequest,
    RankResponse,
    RetrievalRequest,
    RetrievedPost,
    ServedPostRef,
    ServedType,
    UserFeatures,
    UserProfile,
)
from xserve.thunder.store import light_post

NOW_MS = 1_800_000_000_000
MINUTE_MS = 60_000


def cand(post_id: int, author_id: int = 10, **fields) -> PostCandidate:
    """A candidate with core data hydrated (text "", created a minute ago) unless overridden."""
    fields.setdefault("served_type", ServedType.IN_NETWORK)
    fields.setdefault("text", "")
    fields.setdefault("created_at_ms", NOW_MS - MINUTE_MS)
    return PostCandidate(post_id=post_id, author_id=author_id, **fields)


def query(viewer_id: int = 1, **fields) -> ForYouQuery:
    fields.setdefault("request_id", "test-1")
    fields.setdefault("now_ms", NOW_MS)
    return ForYouQuery(viewer_id=viewer_id, **fields)


@dataclass
class InMemoryUserData:
    features: dict[int, UserFeatures] = field(default_factory=dict)
    history: dict[int, tuple[HistoryItem, ...]] = field(default_factory=dict)
    served: list[tuple[int, list[int], int]] = field(default_factory=list)
    impressions: list[FeedImpressions] = field(default_factory=list)  # feeds logged with loop.log_impressions

    async def user_features(self, user_id: int) -> UserFeatures:
        return self.features.get(user_id, UserFeatures())

    async def engagement_history(self, user_id: int, limit: int) -> tuple[HistoryItem, ...]:
        return self.history.get(user_id, ())[-limit:]

    async def record_served(self, user_id: int, post_ids: Sequence[int], served_at_ms: int,
                            impressions: FeedImpressions | None = None) -> None:
        if post_ids:  # as the user store: an empty list (an in-network-only feed's impressions) changes no history
            self.served.append((user_id, list(post_ids), served_at_ms))
        if impressions is not None:
            self.impressions.append(impressions)

    async def served_history(self, user_id: int) -> tuple[int, ...]:
        """Every recorded id (no bounds: the user store's are tested in tests/users)."""
        return tuple(dict.fromkeys(pid for user, ids, _ in self.served if user == user_id for pid in ids))


@dataclass
class InMemoryPostData:
    posts: dict[int, Post] = field(default_factory=dict)
    profiles: dict[int, UserProfile] = field(default_factory=dict)
    calls: int = 0

    async def get_posts(self, post_ids: Sequence[int]) -> dict[int, Post]:
        self.calls += 1
        return {i: self.posts[i] for i in post_ids if i in self.posts}

    async def get_user_profiles(self, user_ids: Sequence[int]) -> dict[int, UserProfile]:
        return {i: self.profiles[i] for i in user_ids if i in self.profiles}


@dataclass
class InMemoryThunder:
    """Every stored post of the followed authors, newest first (no per-author caps)."""

    posts: dict[int, Post] = field(default_factory=dict)
    requests: list[InNetworkRequest] = field(default_factory=list)

    async def in_network_posts(self, req: InNetworkRequest) -> InNetworkResponse:
        self.requests.append(req)
        followed = set(req.followed_ids)
        found = [p for p in self.posts.values() if p.author_id in followed and p.post_id not in req.exclude_ids]
        found.sort(key=lambda p: (p.created_at_ms, p.post_id), reverse=True)
        return InNetworkResponse([light_post(p, min_video_duration_ms=10_000) for p in found[: req.max_results]])


@dataclass
class InMemoryRetrieval:
    """A fixed, already-ranked list of out-of-network posts per user."""

    results: dict[int, list[RetrievedPost]] = field(default_factory=dict)
    requests: list[RetrievalRequest] = field(default_factory=list)

    async def retrieve(self, req: RetrievalRequest) -> list[RetrievedPost]:
        self.requests.append(req)
        return self.results.get(req.user_id, [])[: req.max_results]


@dataclass
class TableRanker:
    """Returns ``table[post_id]`` for each candidate (all zeros if absent); ``fail`` makes it raise."""

    table: dict[int, ActionScores] = field(default_factory=dict)
    fail: bool = False
    requests: list[RankRequest] = field(default_factory=list)

    async def rank(self, req: RankRequest) -> RankResponse:
        self.requests.append(req)
        if self.fail:
            raise ConnectionError("ranker unavailable")
        return RankResponse(scores=tuple(self.table.get(c.post_id, ActionScores()) for c in req.candidates))


@dataclass
class CountersClient:
    """The real :class:`~xserve.posts.PostCounters` (one shard) as the mixer's ``PostStatsClient`` and
    ``ImpressionCountClient``, as ``PostCatalogClient`` serves them over Ray."""

    counters: PostCounters

    async def popular_posts(self, req: PopularRequest) -> list[PopularPost]:
        return self.counters.popular(req)

    async def post_stats(self, post_ids: Sequence[int], now_ms: int) -> dict[int, PostStats]:
        return self.counters.stats(post_ids, now_ms)

    async def impression_counts(self, post_ids: Sequence[int], now_ms: int) -> dict[int, int]:
        return self.counters.impressions(post_ids, now_ms)

    async def record_impressions(self, viewer_id: int, posts: Sequence[ServedPostRef], at_ms: int) -> None:
        self.counters.record_served(viewer_id, posts, at_ms)


def clients(
    user_data: InMemoryUserData | None = None,
    thunder: InMemoryThunder | None = None,
    retrieval: InMemoryRetrieval | None = None,
    post_data: InMemoryPostData | None = None,
    ranker: TableRanker | None = None,
    counters: CountersClient | None = None,
) -> ForYouClients:
    """The fakes as ``ForYouClients``; with ``counters`` also the popular source and cold start (issue 17)."""
    return ForYouClients(
        user_data=user_data or InMemoryUserData(),
        in_network=thunder or InMemoryThunder(),
        retrieval=retrieval or InMemoryRetrieval(),
        post_data=post_data or InMemoryPostData(),
        ranker=ranker or TableRanker(),
        post_stats=counters,
        impressions=counters,
    )
