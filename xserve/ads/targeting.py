"""``AdTargeter``: which ads a viewer may be shown, by targeting and safety (pure).

An ad matches when each of its non-empty targeting lists matches: ``topics`` shares a topic with the
viewer's declared interest topics, ``followers_of`` names an account the viewer follows, ``countries``
holds the request's ``country_code``. Safety is not targeting: the pipeline's required filters drop an ad
whose advertiser the viewer blocked or muted (``AdvertiserFilter``) and check the creative like any post
(its author's blocks and mutes, muted keywords, visibility labels).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from xserve.schema import Ad

__all__ = ["AdTargeter", "ViewerTargeting"]


@dataclass(frozen=True, slots=True)
class ViewerTargeting:
    """What targeting reads of one feed request's viewer."""

    viewer_id: int
    country_code: str = ""
    topics: frozenset[str] = frozenset()
    followed: frozenset[int] = frozenset()


class AdTargeter:
    """The best-bid ``limit`` ads of a slate that target the viewer."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def __repr__(self) -> str:
        return f"AdTargeter(limit={self.limit})"

    @staticmethod
    def matches(ad: Ad, viewer: ViewerTargeting) -> bool:
        t = ad.targeting
        return ((not t.topics or not viewer.topics.isdisjoint(t.topics))
                and (not t.followers_of or not viewer.followed.isdisjoint(t.followers_of))
                and (not t.countries or viewer.country_code.upper() in {c.upper() for c in t.countries}))

    def select(self, ads: Iterable[Ad], viewer: ViewerTargeting) -> list[Ad]:
        """``ads`` in their order (best bid first), the matching ones, one per creative post."""
        out: list[Ad] = []
        creatives: set[int] = set()
        for ad in ads:
            if len(out) >= self.limit:
                break
            if ad.creative_post_id not in creatives and self.matches(ad, viewer):
                creatives.add(ad.creative_post_id)
                out.append(ad)
        return out
