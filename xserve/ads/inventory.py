"""``AdInventory``: the ads, their pacing counters and each viewer's last served ad (pure, in memory).

State changes only through :meth:`AdInventory.apply` of an ``AdEvent`` (``AdPut``, ``AdDeleted``,
``AdDelivered``), so :class:`~xserve.ads.store.AdStore` rebuilds it by replaying its log.

Pacing: every served impression charges the ad its bid (``spent_micros``) and counts one impression;
an ad whose budget cannot pay one more impression (``Ad.exhausted``) is no longer returned by
:meth:`slate`, so it stops being delivered. A delivery is charged after the feed is returned (a side
effect), so feeds built at the same time may each serve the last affordable impression: ``spent_micros``
records what was served and may pass the budget by at most that many bids.
"""

from __future__ import annotations

from collections import OrderedDict

import msgspec

from xserve.config import AdsConfig
from xserve.schema import Ad, AdDeleted, AdDelivered, AdEvent, AdPut, AdSlate, LastAdServed

__all__ = ["AdInventory", "AdRefused"]


class AdRefused(Exception):
    """A write the inventory refuses: HTTP ``status`` and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class AdInventory:
    """Ads by id, and the last ad served to each of the ``max_viewers_tracked`` most recent viewers."""

    def __init__(self, config: AdsConfig) -> None:
        self.config = config
        self._ads: dict[int, Ad] = {}
        self._last_ad: OrderedDict[int, LastAdServed] = OrderedDict()  # viewer -> last ad, least recent first

    def __repr__(self) -> str:
        return f"AdInventory(ads={len(self._ads)}, viewers={len(self._last_ad)})"

    def __len__(self) -> int:
        return len(self._ads)

    def get(self, ad_id: int) -> Ad | None:
        return self._ads.get(ad_id)

    def put(self, ad: Ad) -> AdPut:
        """The event that puts ``ad``; a replacement keeps the stored counters (its budget may be raised)."""
        old = self._ads.get(ad.ad_id)
        if old is not None:
            ad = msgspec.structs.replace(ad, spent_micros=old.spent_micros, impressions=old.impressions)
        return AdPut(ad)

    def delete(self, ad_id: int, at_ms: int) -> AdDeleted:
        if ad_id not in self._ads:
            raise AdRefused(404, f"unknown ad {ad_id}")
        return AdDeleted(ad_id, at_ms)

    def apply(self, event: AdEvent) -> None:
        match event:
            case AdPut(ad=ad):
                self._ads[ad.ad_id] = ad
            case AdDeleted(ad_id=ad_id):
                self._ads.pop(ad_id, None)
            case AdDelivered(viewer_id=viewer, ad_ids=ad_ids, creative_post_ids=post_ids, at_ms=at_ms):
                for ad_id in ad_ids:
                    ad = self._ads.get(ad_id)
                    if ad is not None:  # deleted since it was served: nothing left to charge
                        self._ads[ad_id] = msgspec.structs.replace(
                            ad, spent_micros=ad.spent_micros + ad.bid_micros, impressions=ad.impressions + 1
                        )
                if post_ids:
                    self._last_ad.pop(viewer, None)
                    self._last_ad[viewer] = LastAdServed(post_ids[-1], at_ms)
                    while len(self._last_ad) > self.config.max_viewers_tracked:
                        self._last_ad.popitem(last=False)

    def slate(self, viewer_id: int) -> AdSlate:
        """The ads with budget left (best bid first, at most ``max_live_ads``) and the viewer's last served ad."""
        live = sorted((a for a in self._ads.values() if not a.exhausted), key=lambda a: (-a.bid_micros, a.ad_id))
        return AdSlate(tuple(live[: self.config.max_live_ads]), self._last_ad.get(viewer_id))
