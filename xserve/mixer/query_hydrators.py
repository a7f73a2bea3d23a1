"""Query hydrators (reference ``home-mixer/query_hydrators/``): what the request needs about the viewer.

Each reads the viewer's user-store answer from the query (``viewer_data``) when
the caller fetched it already, so a feed costs one user-store call; otherwise
it asks the store.
"""

from __future__ import annotations

import logging

import msgspec

from xserve.mixer.protocols import PostDataClient, UserDataClient
from xserve.mixer.query import ForYouQuery
from xserve.pipeline import QueryHydrator
from xserve.schema import HistoryItem, UserFeatures

__all__ = ["ServedHistoryQueryHydrator", "UserActionSeqQueryHydrator", "UserFeaturesQueryHydrator"]

log = logging.getLogger(__name__)


class UserActionSeqQueryHydrator(QueryHydrator[ForYouQuery, tuple[HistoryItem, ...]]):
    """The viewer's engagement sequence, the last ``history_length`` entries (newest last).

    The user store aggregates actions per post and window; an empty sequence
    (a new user) is kept as ``()``, and the Phoenix stages report it. With a
    post-data client, each entry gets its post's text (one batched read), the
    ranker's and the user tower's content input, as training reads it from the
    posts table; when that read fails the entries go without text (the model
    then sees "no text", never a missing history).
    """

    def __init__(self, user_data: UserDataClient, history_length: int, post_data: PostDataClient | None = None) -> None:
        self._user_data = user_data
        self._post_data = post_data
        self.history_length = history_length

    async def hydrate(self, query: ForYouQuery) -> tuple[HistoryItem, ...]:
        if query.viewer_data is not None:
            history = query.viewer_data.history
        else:
            history = await self._user_data.engagement_history(query.viewer_id, self.history_length)
        history = tuple(history[-self.history_length :]) if self.history_length > 0 else ()
        if self._post_data is None or not history:
            return history
        try:
            posts = await self._post_data.get_posts(sorted({it.post_id for it in history}))
        except Exception as exc:  # noqa: BLE001 - the text is an input of the model, the history is the feed's
            log.warning("reading the texts of %d history posts failed (scored without them): %s", len(history), exc)
            return history
        texts = {pid: p.text for pid, p in posts.items() if p.text}
        return tuple(msgspec.structs.replace(it, text=texts[it.post_id]) if it.post_id in texts else it for it in history)

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
