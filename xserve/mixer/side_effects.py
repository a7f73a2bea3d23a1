"""Side effects (reference ``CacheRequestInfoSideEffect``): run after the feed is returned."""

from __future__ import annotations

from collections.abc import Sequence

from xserve.loop.impressions import ImpressionCounts, feed_impressions
from xserve.mixer.protocols import ImpressionCountClient, UserDataClient
from xserve.mixer.query import ForYouQuery
from xserve.pipeline import SideEffect
from xserve.schema import PostCandidate, ServedPostRef

__all__ = ["ImpressionCountSideEffect", "ServedHistorySideEffect"]


class ServedHistorySideEffect(SideEffect[ForYouQuery, PostCandidate]):
    """Records which posts were served, for the next bottom request (not for in-network-only feeds), and, with
    ``log_impressions``, every served feed as impressions (``xserve.loop.impressions``), in one user-store call.

    ``counts`` says how many feeds reached the log and how many were lost on the way (a failed call);
    a side effect shed by the pipeline (``max_pending_side_effects``) is counted by the pipeline's metrics.
    """

    def __init__(self, user_data: UserDataClient, log_impressions: bool = False) -> None:
        self._user_data = user_data
        self.log_impressions = log_impressions
        self.counts = ImpressionCounts()

    def __repr__(self) -> str:
        return f"ServedHistorySideEffect(log_impressions={self.log_impressions})"

    def enable(self, query: ForYouQuery) -> bool:
        return self.log_impressions or not query.in_network_only

    async def run(self, query: ForYouQuery, selected: Sequence[PostCandidate]) -> None:
        if not selected:
            return
        served = [] if query.in_network_only else [c.post_id for c in selected]
        if not self.log_impressions:
            await self._user_data.record_served(query.viewer_id, served, query.now_ms)
            return
        impressions = feed_impressions(query.request_id, query.viewer_id, query.now_ms, selected)
        try:
            await self._user_data.record_served(query.viewer_id, served, query.now_ms, impressions)
        except BaseException:
            self.counts.failed_feeds += 1
            raise
        self.counts.logged_feeds += 1
        self.counts.logged_impressions += len(selected)


class ImpressionCountSideEffect(SideEffect[ForYouQuery, PostCandidate]):
    """Counts each served post as one impression for the viewer (cold start reads them through
    ``ImpressionCountClient``); every feed counts, in-network-only ones too: the posts were shown."""

    def __init__(self, impressions: ImpressionCountClient) -> None:
        self._impressions = impressions

    async def run(self, query: ForYouQuery, selected: Sequence[PostCandidate]) -> None:
        refs = [ServedPostRef(c.post_id, c.author_id, c.created_at_ms) for c in selected if c.created_at_ms is not None]
        if refs:
            await self._impressions.record_impressions(query.viewer_id, refs, query.now_ms)
