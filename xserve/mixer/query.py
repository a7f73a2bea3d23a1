"""``ForYouQuery``: the request plus what the query hydrators add (reference ``query.rs``)."""

from __future__ import annotations

import msgspec

from xserve.schema import FeedRequest, HistoryItem, ImpressionBloomFilter, UserFeatures

__all__ = ["ForYouQuery"]


class ForYouQuery(msgspec.Struct, kw_only=True):
    """Mutable: each query hydrator fills the fields it owns (``user_features``, ``history``)."""

    viewer_id: int
    request_id: str  # "<unique id>-<viewer id>", keys every log line of the request
    now_ms: int  # request time; the age filter and the ranker measure from it
    limit: int | None = None  # posts wanted; None = config result_size
    seen_ids: frozenset[int] = frozenset()
    served_ids: frozenset[int] = frozenset()
    bloom_filters: tuple[ImpressionBloomFilter, ...] = ()
    in_network_only: bool = False
    is_bottom_request: bool = False
    country_code: str = ""
    language_code: str = ""
    client_app_id: int = 0
    explain: bool = False
    # query hydrators
    user_features: UserFeatures | None = None  # None = not hydrated (the user store failed)
    history: tuple[HistoryItem, ...] | None = None  # engagement sequence, newest last

    @classmethod
    def from_request(cls, req: FeedRequest, request_id: str, now_ms: int) -> ForYouQuery:
        return cls(
            viewer_id=req.viewer_id,
            request_id=request_id,
            now_ms=now_ms,
            limit=req.limit,
            seen_ids=frozenset(req.seen_ids),
            served_ids=frozenset(req.served_ids),
            bloom_filters=req.bloom_filters,
            in_network_only=req.in_network_only,
            is_bottom_request=req.is_bottom_request,
            country_code=req.country_code,
            language_code=req.language_code,
            client_app_id=req.client_app_id,
            explain=req.explain,
        )

    @property
    def features(self) -> UserFeatures:
        """The hydrated features, or empty ones when hydration failed (as the reference defaults)."""
        return self.user_features if self.user_features is not None else _NO_FEATURES


_NO_FEATURES = UserFeatures()
