"""Side effects (reference ``CacheRequestInfoSideEffect``): run after the feed is returned."""

from __future__ import annotations

from collections.abc import Sequence

from xserve.mixer.protocols import UserDataClient
from xserve.mixer.query import ForYouQuery
from xserve.pipeline import SideEffect
from xserve.schema import PostCandidate

__all__ = ["ServedHistorySideEffect"]


class ServedHistorySideEffect(SideEffect[ForYouQuery, PostCandidate]):
    """Records which posts were served, for the next bottom request; skipped for in-network-only feeds."""

    def __init__(self, user_data: UserDataClient) -> None:
        self._user_data = user_data

    def enable(self, query: ForYouQuery) -> bool:
        return not query.in_network_only

    async def run(self, query: ForYouQuery, selected: Sequence[PostCandidate]) -> None:
        if selected:
            await self._user_data.record_served(query.viewer_id, [c.post_id for c in selected], query.now_ms)
