"""Side effects (reference ``CacheRequestInfoSideEffect``): run after the feed is returned."""

from __future__ import annotations

from collections.abc import Sequence

from xserve.mixer.protocols import ImpressionCountClient, UserDataClient
from xserve.mixer.query import ForYouQuery
from xserve.pipeline import SideEffect
from xserve.schema import PostCandidate, ServedPostRef

__all__ = ["ImpressionCountSideEffect", "ServedHistorySideEffect"]


class ServedHistorySideEffect(SideEffect[ForYouQuery, PostCandidate]):
    """Records which posts were served, for the next bottom request; skipped for in-network-only feeds."""

    def __init__(self, user_data: UserDataClient) -> None:
        self._user_data = user_data

    def enable(self, query: ForYouQuery) -> bool:
        return not query.in_network_only

    async def run(self, query: ForYouQuery, selected: Sequence[PostCandidate]) -> None:
        if selected:
            await self._user_data.record_served(query.viewer_id, [c.post_id for c in selected], query.now_ms)


class ImpressionCountSideEffect(SideEffect[ForYouQuery, PostCandidate]):
    """Counts each served post as one impression for the viewer (cold start reads them through
    ``ImpressionCountClient``); every feed counts, in-network-only ones too: the posts were shown."""

    def __init__(self, impressions: ImpressionCountClient) -> None:
        self._impressions = impressions

    async def run(self, query: ForYouQuery, selected: Sequence[PostCandidate]) -> None:
        refs = [ServedPostRef(c.post_id, c.author_id, c.created_at_ms) for c in selected if c.created_at_ms is not None]
        if refs:
            await self._impressions.record_impressions(query.viewer_id, refs, query.now_ms)
