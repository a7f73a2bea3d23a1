"""The ads stages of the For You pipeline (issue 17 item 5), around the pure rules of :mod:`xserve.ads`.

An ad's creative post travels with the organic candidates, so it is checked and ranked exactly like them:

1. ``AdSlateQueryHydrator``: the ads with budget left and the viewer's last served ad (one ads-store
   call), and on a bottom request the organic posts served since that ad (the served history);
2. ``AdSource``: the targeted ads (``AdTargeter``, best bid first) as candidates (``ServedType.AD``), listed
   first, so ``DropDuplicatesFilter`` keeps the ad copy of a creative another source also returns: while an ad
   runs, its creative is shown only as the ad (spaced and paid), never twice on a page;
3. the organic hydrators and filters run on them too (core data, the creative's author's blocks and
   mutes, muted keywords, subscriptions, seen and served posts; not the age filter: a campaign outlives
   48 h); ``AdvertiserFilter`` (required) drops ads whose advertiser the viewer blocked or muted;
4. the ranker scores them in the same call as the organic posts (``PhoenixScorer``); ``AdValueScorer``
   sets each ad's value = its weighted score (the same Phoenix predictions and weights) x its bid;
5. ``TopKWithAdsSelector``: the organic top-k, then the ranked ads by value (they never take organic slots);
6. the visibility hydrator and filter check the creatives like any post; ``AdBlenderFilter``, the last
   post-selection stage, places the ads by ``AdBlender``'s spacing and removes the rest;
7. ``AdDeliverySideEffect`` charges each served ad its bid and records the viewer's last ad.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from xserve.ads.blender import AdBlender, AdSpacing
from xserve.ads.targeting import AdTargeter, ViewerTargeting
from xserve.mixer.filters import Candidates, partition
from xserve.mixer.protocols import AdsClient, UserDataClient
from xserve.mixer.query import ForYouQuery
from xserve.mixer.selectors import TopKScoreSelector
from xserve.pipeline import Filter, FilterResult, QueryHydrator, Scorer, SideEffect, Source
from xserve.schema import Ad, AdDelivered, AdRef, PostCandidate, ServedType

__all__ = [
    "AdBlenderFilter",
    "AdDeliverySideEffect",
    "AdSlateQueryHydrator",
    "AdSource",
    "AdValueScorer",
    "AdvertiserFilter",
    "TopKWithAdsSelector",
    "organic_since",
]

BID_UNIT_MICROS = 1_000_000  # bids are in millionths of the currency unit; an ad's value uses whole units


def organic_since(served: Sequence[int], creative_post_id: int) -> int | None:
    """Posts served after ``creative_post_id`` in ``served`` (oldest first), or None when it is not there."""
    for back, post_id in enumerate(reversed(served)):
        if post_id == creative_post_id:
            return back
    return None


class AdSlateQueryHydrator(QueryHydrator[ForYouQuery, tuple[tuple[Ad, ...], AdSpacing]]):
    """The ads with budget left and where the viewer stands since the last ad (``AdSpacing``).

    The organic count since the last ad is read from the served history on bottom requests only: a top
    request starts a new timeline (the time gap still applies). Not for in-network-only feeds.
    """

    def __init__(self, ads: AdsClient, user_data: UserDataClient) -> None:
        self._ads = ads
        self._user_data = user_data

    def enable(self, query: ForYouQuery) -> bool:
        return not query.in_network_only

    async def hydrate(self, query: ForYouQuery) -> tuple[tuple[Ad, ...], AdSpacing]:
        slate = await self._ads.ad_slate(query.viewer_id)
        last = slate.last_ad
        if last is None:
            return slate.ads, AdSpacing()
        since = None
        if query.is_bottom_request:
            if query.viewer_data is not None:
                served = query.viewer_data.served_ids
            else:
                served = await self._user_data.served_history(query.viewer_id)
            since = organic_since(served, last.creative_post_id)
        return slate.ads, AdSpacing(since, last.served_at_ms)

    def update(self, query: ForYouQuery, value: tuple[tuple[Ad, ...], AdSpacing]) -> None:
        query.ads, query.ad_spacing = value


class AdSource(Source[ForYouQuery, PostCandidate]):
    """The targeted ads' creative posts (best bid first, at most the targeter's limit)."""

    def __init__(self, targeter: AdTargeter, blender: AdBlender) -> None:
        self.targeter = targeter
        self._blender = blender

    def __repr__(self) -> str:
        return f"AdSource({self.targeter!r})"

    def enable(self, query: ForYouQuery) -> bool:
        # no candidates the blender would not place anyway: none in the time gap (no ranker work for them)
        return bool(query.ads) and not query.in_network_only and not self._blender.in_gap(query.ad_spacing, query.now_ms)

    async def get_candidates(self, query: ForYouQuery) -> list[PostCandidate]:
        f = query.features
        viewer = ViewerTargeting(query.viewer_id, query.country_code, frozenset(f.topics), f.followed_user_ids)
        return [
            PostCandidate(post_id=ad.creative_post_id, author_id=ad.creative_author_id, served_type=ServedType.AD,
                          ad=AdRef(ad.ad_id, ad.advertiser_id, ad.bid_micros))
            for ad in self.targeter.select(query.ads, viewer)
        ]


class AdvertiserFilter(Filter[ForYouQuery, PostCandidate]):
    """Ads whose advertiser the viewer blocked or muted (the creative's author is checked by
    ``AuthorSocialgraphFilter``, as every post's)."""

    def filter(self, query: ForYouQuery, candidates: Candidates) -> FilterResult[PostCandidate]:
        f = query.features
        hidden = f.blocked_user_ids | f.muted_user_ids
        return partition(candidates, lambda c: c.ad is not None and c.ad.advertiser_id in hidden)


Valued = tuple[float | None, float | None]  # (ad value, new score)


class AdValueScorer(Scorer[ForYouQuery, PostCandidate, Valued]):
    """An ad's value = its weighted score (Phoenix predictions x the scoring weights, as organic posts) x its
    bid in currency units; it is also the ad's score in the feed. Organic posts are left as they are; an ad the
    ranker did not score gets no value (it is not served)."""

    async def score(self, query: ForYouQuery, candidates: Sequence[PostCandidate]) -> list[Valued]:
        out: list[Valued] = []
        for c in candidates:
            if c.ad is None:
                out.append((None, c.score))
            elif c.action_scores is None or c.weighted_score is None:
                out.append((None, None))
            else:
                value = c.weighted_score * c.ad.bid_micros / BID_UNIT_MICROS
                out.append((value, value))
        return out

    def update(self, candidate: PostCandidate, value: Valued) -> None:
        candidate.ad_value, candidate.score = value


class TopKWithAdsSelector(TopKScoreSelector):
    """The organic ``size`` best by score, then the ranked ads by value (ads never take an organic slot)."""

    def select(self, query: ForYouQuery, candidates: list[PostCandidate]) -> list[PostCandidate]:
        organic = super().select(query, [c for c in candidates if c.ad is None])
        ads = sorted((c for c in candidates if c.ad is not None and c.ad_value is not None), key=lambda c: -c.ad_value)
        return organic + ads


class AdBlenderFilter(Filter[ForYouQuery, PostCandidate]):
    """Places the ads among the organic posts (``AdBlender``); the ads it cannot place are removed."""

    def __init__(self, blender: AdBlender, limit: Callable[[ForYouQuery], int]) -> None:
        self.blender = blender
        self._limit = limit

    def __repr__(self) -> str:
        return f"AdBlenderFilter({self.blender!r})"

    def filter(self, query: ForYouQuery, candidates: Candidates) -> FilterResult[PostCandidate]:
        organic = [c for c in candidates if c.ad is None]
        ads = [c for c in candidates if c.ad is not None]
        if not ads:
            return FilterResult(candidates, [])
        page = self.blender.blend(organic, ads, self._limit(query), query.ad_spacing, query.now_ms)
        placed = {id(c) for c in page}
        # the page, then the organic posts past it (the pipeline truncates them), keeping every organic post
        return FilterResult(page + [c for c in organic if id(c) not in placed], [c for c in ads if id(c) not in placed])


class AdDeliverySideEffect(SideEffect[ForYouQuery, PostCandidate]):
    """Charges each served ad its bid and records the viewer's last served ad (``AdDelivered``)."""

    def __init__(self, ads: AdsClient) -> None:
        self._ads = ads

    async def run(self, query: ForYouQuery, selected: Sequence[PostCandidate]) -> None:
        served = [c for c in selected if c.ad is not None]
        if served:
            await self._ads.record_delivery(AdDelivered(
                query.viewer_id, tuple(c.ad.ad_id for c in served), tuple(c.post_id for c in served), query.now_ms
            ))
