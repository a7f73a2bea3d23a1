"""Query hydrators (reference ``home-mixer/query_hydrators/``): what the request needs about the viewer.

Both read the viewer's user-store answer from the query (``viewer_data``) when
the caller fetched it already, so a feed costs one user-store call; otherwise
they ask the store.
"""

from __future__ import annotations

from xserve.mixer.protocols import UserDataClient
from xserve.mixer.query import ForYouQuery
from xserve.pipeline import QueryHydrator
from xserve.schema import HistoryItem, UserFeatures

__all__ = ["UserActionSeqQueryHydrator", "UserFeaturesQueryHydrator"]


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
