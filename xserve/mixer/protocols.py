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
    HistoryItem,
    InNetworkRequest,
    InNetworkResponse,
    Post,
    RankRequest,
    RankResponse,
    RetrievalRequest,
    RetrievedPost,
    UserFeatures,
    UserProfile,
)

__all__ = [
    "ForYouClients",
    "InNetworkClient",
    "PostDataClient",
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

    async def record_served(self, user_id: int, post_ids: Sequence[int], served_at_ms: int) -> None: ...

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


@dataclass(frozen=True, slots=True)
class ForYouClients:
    """Every service the For You pipeline reaches, bundled for ``build_for_you_pipeline``."""

    user_data: UserDataClient
    in_network: InNetworkClient
    retrieval: RetrievalClient
    post_data: PostDataClient
    ranker: RankerClient
