"""``ForYouQuery``: the request plus what the query hydrators add (reference ``query.rs``).

It also carries what the request shares between its stages, so nothing travels
beside it: the viewer's user-store answer when the caller already fetched it
(``viewer_data``: the query hydrators read it instead of calling the store) and
the request's :class:`~xserve.posts.request_cache.RequestPostCache` (``post_cache``:
the stages' post lookups share one fetch per post).
"""

from __future__ import annotations

import msgspec

from xserve.ads.blender import AdSpacing
from xserve.posts.request_cache import RequestPostCache
from xserve.schema import Ad, FeedRequest, HistoryItem, ImpressionBloomFilter, UserContext, UserFeatures, UserQueryData

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
    # shared by the request's stages
    viewer_data: UserQueryData | None = None  # the viewer's user-store answer, when the caller fetched it already
    post_cache: RequestPostCache = msgspec.field(default_factory=RequestPostCache)  # this request's post lookups
    # query hydrators
    user_features: UserFeatures | None = None  # None = not hydrated (the user store failed)
    history: tuple[HistoryItem, ...] | None = None  # engagement sequence, newest last
    served_history: frozenset[int] = frozenset()  # bottom requests: what the user store recorded as served
    ads: tuple[Ad, ...] = ()  # AdSlateQueryHydrator: the ads with budget left, best bid first
    ad_spacing: AdSpacing = AdSpacing()  # AdSlateQueryHydrator: the viewer's last ad, for the blender
    # sources
    left_out: list[str] = msgspec.field(default_factory=list)  # parts a source answered without (a Thunder shard): in the feed's degraded

    @classmethod
    def from_request(
        cls, req: FeedRequest, request_id: str, now_ms: int, viewer_data: UserQueryData | None = None
    ) -> ForYouQuery:
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
            viewer_data=viewer_data,
        )

    @property
    def features(self) -> UserFeatures:
        """The hydrated features, or empty ones when hydration failed (as the reference defaults)."""
        return self.user_features if self.user_features is not None else _NO_FEATURES

    @property
    def user_context(self) -> UserContext:
        """The ranker's and the user tower's context input: the request's country, language and client app and
        the viewer's declared topics (``features.context_ids`` hashes them)."""
        return UserContext(country_code=self.country_code, language_code=self.language_code,
                           client_app_id=self.client_app_id, topics=self.features.topics)

    @property
    def previously_served(self) -> frozenset[int]:
        """Posts served to the viewer: what the client sent, and what the server recorded."""
        return self.served_ids | self.served_history


_NO_FEATURES = UserFeatures()
