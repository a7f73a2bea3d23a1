"""``AdBlender``: where ads go in a page of organic posts, spaced by position and by time (pure).

Rules (``AdsConfig``; ``docs/mixer.md``, "Ads"):

* **position**: at least ``min_organic_between`` organic posts between two ads, none before slot
  ``first_ad_slot`` (never first), and an ad is always followed by an organic post on the page (the
  reference never ends a feed on an ad); a page of fewer than ``min_organic_posts`` organic posts gets none;
* **across pages**: on a bottom ("load more") request, the organic posts the viewer was served since the
  last ad (counted in the served history) count toward the first ad's spacing, so the rule holds across
  the page boundary. A top request starts a new timeline: only the time gap carries over;
* **time**: no ad within ``min_gap_ms`` of the viewer's last served ad. The elapsed time is clamped at 0:
  a last-ad time ahead of this clock (another replica's skew) counts as just served, never as long ago.
  Ads on one page are served together; within a page, position alone spaces them.

Ads are offered best first (by predicted value x bid); each free slot takes the next.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from xserve.config import AdsConfig

__all__ = ["AdBlender", "AdSpacing"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class AdSpacing:
    """Where the viewer stands since the last ad, from earlier pages."""

    organic_since_last_ad: int | None = None  # posts served after the last ad (None: no ad in the history, or a top request)
    last_ad_at_ms: int | None = None  # when the last ad was served (None: never, or forgotten)


class AdBlender:
    """Interleaves ranked ads into an organic page under the module's rules."""

    def __init__(self, config: AdsConfig) -> None:
        self.config = config

    def __repr__(self) -> str:
        c = self.config
        return (f"AdBlender(between>={c.min_organic_between}, first_slot={c.first_ad_slot}, "
                f"min_organic={c.min_organic_posts}, gap={c.min_gap_ms / 1000:g}s)")

    def in_gap(self, spacing: AdSpacing, now_ms: int) -> bool:
        """Whether the viewer's last ad is too recent for any ad now."""
        if spacing.last_ad_at_ms is None:
            return False
        elapsed = max(now_ms - spacing.last_ad_at_ms, 0)  # the clamp: a future time counts as now
        return elapsed < self.config.min_gap_ms

    def blend(self, organic: Sequence[T], ads: Sequence[T], limit: int, spacing: AdSpacing, now_ms: int) -> list[T]:
        """The page (at most ``limit`` items): ``organic`` in order with ads from ``ads`` (best first) placed
        in the first slots the rules allow. The ads left out are those not in the result."""
        c = self.config
        page = list(organic[:limit])
        if not ads or len(organic) < c.min_organic_posts or self.in_gap(spacing, now_ms):
            return page
        since = spacing.organic_since_last_ad
        since = c.min_organic_between if since is None else since  # no ad on earlier pages: only first_ad_slot applies
        out: list[T] = []
        next_ad = 0
        for post in organic:
            if len(out) >= limit:
                break
            # an ad here must leave room for the organic post after it (never end the page on an ad)
            if (next_ad < len(ads) and len(out) >= c.first_ad_slot and since >= c.min_organic_between
                    and len(out) + 2 <= limit):
                out.append(ads[next_ad])
                next_ad += 1
                since = 0
            out.append(post)
            since += 1
        return out
