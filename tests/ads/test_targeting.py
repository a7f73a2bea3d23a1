"""Ad targeting (issue 17 item 5): topics, followers of an account, country; empty lists match everyone."""

from __future__ import annotations

from xserve.ads.targeting import AdTargeter, ViewerTargeting
from xserve.schema import Ad, AdTargeting


def ad(ad_id: int, creative: int | None = None, **targeting) -> Ad:
    return Ad(ad_id, advertiser_id=7, creative_post_id=creative or 100 + ad_id, creative_author_id=7,
              bid_micros=1_000, budget_micros=10**6, targeting=AdTargeting(**targeting))


VIEWER = ViewerTargeting(1, country_code="fr", topics=frozenset({"cycling", "jazz"}), followed=frozenset({20, 21}))


def test_each_targeting_list_must_match():
    t = AdTargeter(limit=10)
    assert t.matches(ad(1), VIEWER)  # untargeted
    assert t.matches(ad(1, topics=("jazz", "golf")), VIEWER)
    assert not t.matches(ad(1, topics=("golf",)), VIEWER)
    assert t.matches(ad(1, followers_of=(21,)), VIEWER)
    assert not t.matches(ad(1, followers_of=(99,)), VIEWER)
    assert t.matches(ad(1, countries=("FR", "DE")), VIEWER)  # country codes compare case-insensitively
    assert not t.matches(ad(1, countries=("US",)), VIEWER)
    assert not t.matches(ad(1, topics=("jazz",), countries=("US",)), VIEWER)  # all lists, not any
    assert not t.matches(ad(1, countries=("FR",)), ViewerTargeting(1))  # no country in the request: no match


def test_select_keeps_order_one_ad_per_creative_and_the_limit():
    ads = [ad(1, countries=("US",)), ad(2), ad(3, creative=102), ad(4), ad(5)]
    assert [a.ad_id for a in AdTargeter(limit=2).select(ads, VIEWER)] == [2, 4]
    assert [a.ad_id for a in AdTargeter(limit=0).select(ads, VIEWER)] == []
