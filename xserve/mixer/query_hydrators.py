"""Query hydrators (reference ``home-mixer/query_hydrators/``): what the request needs about the viewer.

Each reads the viewer's user-store answer from the query (``viewer_data``) when
the caller fetched it already, so a feed costs one user-store call; otherwise
it asks the store.
"""

from __future__ import annotations

from xserve.mixer.protocols import UserDataClient
from xserve.mixer.query import ForYouQuery
from xserve.pipeline import QueryHydrator
from xserve.schema import HistoryItem, UserFeatures

__all__ = ["ServedHistoryQueryHydrator", "UserActionSeqQueryHydrator", "UserFeaturesQueryHydrator"]


class UserActionSeqQueryHydrator(QueryHydrator[ForYouQuery, tuple[HistoryItem, ...]]):
    """The viewer's engagement sequence, the last ``history_length`` entries (newest last).

    The user store aggregates actions per post and window; an empty sequence
    (a new user) is kept as ``()``, and the Phoenix stages report it.
    """

    def __init__(self, user_data: UserDataClient, history_length: int) -> None:
        self._user_data = user_data
        self.history_length = history_length

    async def hydrate(self, query: ForYouQuery) -> tuple[HistoryItem, ...]:
        if query.viewer_data is not None:
            history = query.viewer_data.history
        else:
            history = await self._user_data.engagement_history(query.viewer_id, self.history_length)
        return tuple(history[-self.history_length :]) if self.history_length > 0 else ()

    def update(self, query: ForYouQuery, value: tuple[HistoryItem, ...]) -> None:
        query.history = value


class UserFeaturesQueryHydrator(QueryHydrator[ForYouQuery, UserFeatures]):
    """Follows, blocks, mutes, muted keywords and subscriptions, in one user-store call."""

    def __init__(self, user_data: UserDataClient) -> None:
        self._user_data = user_data

    async def hydrate(self, query: ForYouQuery) -> UserFeatures:
        if query.viewer_data is not None:
            return query.viewer_data.features
        return await self._user_data.user_features(query.viewer_id)

    def update(self, query: ForYouQuery, value: UserFeatures) -> None:
        query.user_features = value


class ServedHistoryQueryHydrator(QueryHydrator[ForYouQuery, frozenset[int]]):
    """On a bottom request, the posts the served-history side effect recorded for the viewer, so
    ``PreviouslyServedFilter`` excludes them beside the ``served_ids`` the client sends (a client may send none).

    Not for in-network-only feeds, whose posts the side effect does not record either.
    """

    def __init__(self, user_data: UserDataClient) -> None:
        self._user_data = user_data

    def enable(self, query: ForYouQuery) -> bool:
        return query.is_bottom_request and not query.in_network_only

    async def hydrate(self, query: ForYouQuery) -> frozenset[int]:
        if query.viewer_data is not None:
            return frozenset(query.viewer_data.served_ids)
        return frozenset(await self._user_data.served_history(query.viewer_id))

    def update(self, query: ForYouQuery, value: frozenset[int]) -> None:
        query.served_history = value
