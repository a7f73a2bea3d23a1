"""The ads inventory (issue 17 item 5): pacing counters, budgets stopping delivery, replacement, deletes, and
durability (the store's log replayed on reopen)."""

from __future__ import annotations

import pytest

from xserve.ads.inventory import AdInventory, AdRefused
from xserve.ads.store import AdStore
from xserve.config import AdsConfig, load_config
from xserve.schema import Ad, AdDelivered, AdTargeting


def ad(ad_id: int = 1, bid: int = 2_000, budget: int = 5_000, **fields) -> Ad:
    fields.setdefault("advertiser_id", 7)
    fields.setdefault("creative_post_id", 100 + ad_id)
    fields.setdefault("creative_author_id", 7)
    return Ad(ad_id=ad_id, bid_micros=bid, budget_micros=budget, **fields)


def deliver(inv: AdInventory, viewer: int, *ads: Ad, at_ms: int = 1_000) -> None:
    inv.apply(AdDelivered(viewer, tuple(a.ad_id for a in ads), tuple(a.creative_post_id for a in ads), at_ms))


def test_budget_exhaustion_stops_delivery():
    inv = AdInventory(AdsConfig())
    a = ad(bid=2_000, budget=5_000)  # pays for two impressions, not a third
    inv.apply(inv.put(a))
    assert [x.ad_id for x in inv.slate(1).ads] == [1]
    deliver(inv, 1, a)
    assert inv.slate(1).ads[0].spent_micros == 2_000
    deliver(inv, 2, a)
    stored = inv.get(1)
    assert (stored.spent_micros, stored.impressions, stored.exhausted) == (4_000, 2, True)
    assert inv.slate(1).ads == ()  # 4,000 + 2,000 > 5,000: no longer delivered


def test_slate_is_best_bid_first_capped_and_carries_the_viewers_last_ad():
    inv = AdInventory(AdsConfig(max_live_ads=2))
    for i, bid in enumerate((1_000, 3_000, 2_000), start=1):
        inv.apply(inv.put(ad(i, bid=bid, budget=10**6)))
    assert [a.ad_id for a in inv.slate(5).ads] == [2, 3]
    assert inv.slate(5).last_ad is None
    deliver(inv, 5, inv.get(3), inv.get(1), at_ms=42)
    last = inv.slate(5).last_ad
    assert (last.creative_post_id, last.served_at_ms) == (101, 42)  # the last ad of the delivery, in feed order


def test_replacing_an_ad_keeps_its_counters_and_a_raised_budget_resumes_delivery():
    inv = AdInventory(AdsConfig())
    inv.apply(inv.put(ad(bid=2_000, budget=2_000)))
    deliver(inv, 1, inv.get(1))
    assert inv.slate(1).ads == ()
    inv.apply(inv.put(ad(bid=2_000, budget=10_000, targeting=AdTargeting(countries=("US",)))))
    stored = inv.get(1)
    assert (stored.spent_micros, stored.impressions, stored.targeting.countries) == (2_000, 1, ("US",))
    assert [a.ad_id for a in inv.slate(1).ads] == [1]


def test_delete_unknown_is_refused_and_a_deleted_ad_is_not_charged():
    inv = AdInventory(AdsConfig())
    with pytest.raises(AdRefused, match="unknown ad 9"):
        inv.delete(9, 0)
    a = ad()
    inv.apply(inv.put(a))
    inv.apply(inv.delete(1, 0))
    deliver(inv, 1, a)  # served before the delete, charged after it
    assert inv.get(1) is None and inv.slate(1).ads == ()


def test_last_ads_are_bounded_by_viewers_tracked():
    inv = AdInventory(AdsConfig(max_viewers_tracked=2))
    a = ad(budget=10**9)
    inv.apply(inv.put(a))
    for viewer in (1, 2, 3):
        deliver(inv, viewer, a)
    assert inv.slate(1).last_ad is None and inv.slate(3).last_ad is not None


def test_an_acknowledged_write_survives_a_reopen(tmp_path):
    config = load_config(environ={}, overrides={"storage": {"data_dir": str(tmp_path), "fsync": False}})
    store = AdStore.open(config, clock_ms=lambda: 5)
    store.put(ad(1, bid=1_000, budget=3_000))
    store.put(ad(2))
    store.deliver(AdDelivered(8, (1,), (101,), 4))
    store.delete(2)
    store.close()
    reopened = AdStore.open(config)
    assert reopened.replayed == 4
    assert reopened.get(1) == ad(1, bid=1_000, budget=3_000, spent_micros=1_000, impressions=1)
    assert reopened.get(2) is None
    assert reopened.slate(8).last_ad.creative_post_id == 101
    reopened.close()
