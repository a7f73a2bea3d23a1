"""The ads blender (issue 17 item 5): position spacing, none first, never last, the time gap with its clamp,
and spacing that holds across pages (the served history carries the count)."""

from __future__ import annotations

from xserve.ads.blender import AdBlender, AdSpacing
from xserve.config import AdsConfig
from xserve.mixer.ads import organic_since

NOW = 10_000_000
BLENDER = AdBlender(AdsConfig())  # 3 between, first slot 1, 5 organic at least, 60 s gap


def organic(n: int, start: int = 1) -> list[str]:
    return [f"o{i}" for i in range(start, start + n)]


ADS = ["A1", "A2", "A3", "A4", "A5", "A6"]


def ad_slots(page: list[str]) -> list[int]:
    return [i for i, x in enumerate(page) if x.startswith("A")]


def assert_spaced(page: list[str], between: int = 3) -> None:
    slots = ad_slots(page)
    assert all(b - a - 1 >= between for a, b in zip(slots, slots[1:])), page
    assert 0 not in slots and (not slots or slots[-1] < len(page) - 1), page


def test_within_a_page_ads_are_spaced_never_first_and_never_last():
    page = BLENDER.blend(organic(20), ADS, 20, AdSpacing(), NOW)
    assert len(page) == 20
    assert ad_slots(page) == [1, 5, 9, 13, 17]
    assert_spaced(page)
    assert [x for x in page if x.startswith("o")] == organic(15)  # organic order kept
    assert BLENDER.blend(organic(4), ADS, 20, AdSpacing(), NOW) == organic(4)  # under min_organic_posts
    short = BLENDER.blend(organic(6), ADS, 7, AdSpacing(), NOW)
    assert ad_slots(short) == [1, 5] and short[-1].startswith("o")


def test_spacing_holds_across_pages():
    served: list[str] = []
    now = NOW
    for page_no in range(3):
        since = organic_since(served, next(x for x in reversed(served) if x.startswith("A"))) if served else None
        last_at = None if page_no == 0 else now - 120_000  # the previous page, two minutes ago
        page = BLENDER.blend(organic(10, start=10 * page_no), ADS[2 * page_no:], 8, AdSpacing(since, last_at), now)
        served += page
        assert_spaced(served)  # the concatenated pages: at least 3 organic posts between any two ads
    assert len(ad_slots(served)) >= 4


def test_page_two_waits_for_the_organic_posts_owed_by_page_one():
    page = BLENDER.blend(organic(10), ADS, 10, AdSpacing(organic_since_last_ad=1, last_ad_at_ms=NOW - 120_000), NOW)
    assert ad_slots(page)[0] == 2  # 1 served after the last ad + 2 here = 3 between
    fresh = BLENDER.blend(organic(10), ADS, 10, AdSpacing(organic_since_last_ad=7, last_ad_at_ms=NOW - 120_000), NOW)
    assert ad_slots(fresh)[0] == 1  # owed nothing: the first-slot rule alone


def test_time_gap_and_its_clamp():
    recent = AdSpacing(organic_since_last_ad=50, last_ad_at_ms=NOW - 59_000)
    assert ad_slots(BLENDER.blend(organic(10), ADS, 10, recent, NOW)) == []
    old = AdSpacing(organic_since_last_ad=50, last_ad_at_ms=NOW - 60_000)
    assert ad_slots(BLENDER.blend(organic(10), ADS, 10, old, NOW)) != []
    future = AdSpacing(last_ad_at_ms=NOW + 3_600_000)  # another replica's clock ahead: counts as just served
    assert BLENDER.in_gap(future, NOW)
    assert not AdBlender(AdsConfig(min_gap_ms=0)).in_gap(AdSpacing(last_ad_at_ms=NOW), NOW)


def test_organic_since_counts_the_posts_after_the_last_ad():
    assert organic_since([1, 2, 9, 3, 4], 9) == 2
    assert organic_since([1, 2, 9], 9) == 0
    assert organic_since([1, 2], 9) is None
