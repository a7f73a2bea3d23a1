"""The services the For You mixer calls, as narrow Protocols over schema Structs.

Production satisfies them with Ray handle adapters (``xserve/deployments/clients.py``);
tests with in-memory classes. Every method is async and batched: one call
per request per service.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from xserve.schema import (
    FeedImpressions,
    AdDelivered,
    AdSlate,
    HistoryItem,
    InNetworkRequest,
    InNetworkResponse,
    PopularPost,
    PopularRequest,
    Post,
    PostStats,
    RankRequest,
    RankResponse,
    RetrievalRequest,
    RetrievedPost,
    ServedPostRef,
    UserFeatures,
    UserProfile,
)

__all__ = [
    "AdsClient",
    "ForYouClients",
    "ImpressionCountClient",
    "InNetworkClient",
    "PostDataClient",
    "PostStatsClient",
    "RankerClient",
    "RetrievalClient",
    "UserDataClient",
]


class UserDataClient(Protocol):
    """The user store: social graph, preferences, engagement history, served history."""

    async def user_features(self, user_id: int) -> UserFeatures: ...

    async def engagement_history(self, user_id: int, limit: int) -> tuple[HistoryItem, ...]:
        """The user's latest ``limit`` aggregated engagements, newest last."""
        ...

    async def record_served(self, user_id: int, post_ids: Sequence[int], served_at_ms: int,
                            impressions: FeedImpressions | None = None) -> None:
        """Add ``post_ids`` to the served history; log ``impressions`` (the served feed) when given."""
        ...

    async def served_history(self, user_id: int) -> tuple[int, ...]:
        """The post ids recorded by ``record_served`` and still kept (the store bounds them by count and age)."""
        ...


class InNetworkClient(Protocol):
    """Thunder: recent posts of followed authors, newest first, and the shards left out of the answer."""

    async def in_network_posts(self, req: InNetworkRequest) -> InNetworkResponse: ...


class RetrievalClient(Protocol):
    """Phoenix retrieval: out-of-network candidates nearest the user's embedding."""

    async def retrieve(self, req: RetrievalRequest) -> list[RetrievedPost]: ...


class PostDataClient(Protocol):
    """The post and user tables: core data, media, labels, profiles."""

    async def get_posts(self, post_ids: Sequence[int]) -> dict[int, Post]:
        """Posts by id; a missing key means the post does not exist (or was deleted)."""
        ...

    async def get_user_profiles(self, user_ids: Sequence[int]) -> dict[int, UserProfile]: ...


class RankerClient(Protocol):
    """The Phoenix ranker: per-action probabilities for each candidate."""

    async def rank(self, req: RankRequest) -> RankResponse: ...


class PostStatsClient(Protocol):
    """Per-post engagement counters (causal counts of distinct viewers, ``xserve/posts/counters.py``)."""

    async def popular_posts(self, req: PopularRequest) -> list[PopularPost]:
        """Recent posts by engaged viewers as of ``req.now_ms``, best first."""
        ...

    async def post_stats(self, post_ids: Sequence[int], now_ms: int) -> dict[int, PostStats]:
        """Engaged viewers and favorites as of ``now_ms``; a missing key means no counted engagement."""
        ...


class ImpressionCountClient(Protocol):
    """How many distinct viewers each post was shown to: what cold start reads a post's impressions through.

    Today's implementation counts the feed's served posts (the served history, recorded after each response by
    ``ImpressionCountSideEffect``, in the post catalog's counters). An impression log can answer the same two
    calls: ``impression_counts`` from the log, ``record_impressions`` as its writer (or a no-op when the log has
    its own).
    """

    async def impression_counts(self, post_ids: Sequence[int], now_ms: int) -> dict[int, int]:
        """Viewers shown each post at or before ``now_ms``; a missing key means none."""
        ...

    async def record_impressions(self, viewer_id: int, posts: Sequence[ServedPostRef], at_ms: int) -> None: ...


class AdsClient(Protocol):
    """The ads inventory (``xserve/ads``): what a feed may show, and what it showed."""

    async def ad_slate(self, viewer_id: int) -> AdSlate:
        """The ads with budget left (best bid first) and the viewer's last served ad."""
        ...

    async def record_delivery(self, delivery: AdDelivered) -> None:
        """Charge each served ad its bid; the viewer's last served ad becomes the delivery's last."""
        ...


@dataclass(frozen=True, slots=True)
class ForYouClients:
    """Every service the For You pipeline reaches, bundled for ``build_for_you_pipeline``.

    ``post_stats`` and ``impressions`` are the issue-17 additions: without them the pipeline is the January
    one (no popular source, no cold start).
    """

    user_data: UserDataClient
    in_network: InNetworkClient
    retrieval: RetrievalClient
    post_data: PostDataClient
    ranker: RankerClient
    post_stats: PostStatsClient | None = None  # the popular source and cold start
    impressions: ImpressionCountClient | None = None  # cold start; recorded by ImpressionCountSideEffect
    ads: AdsClient | None = None  # the ads stages (config ads.enabled); without it the feed has no ads
