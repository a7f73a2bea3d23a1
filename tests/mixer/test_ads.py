"""The ads stages in the For You pipeline (issue 17 item 5), over the fakes and a real ``AdInventory``:
spacing across pages, ``source: "ad"`` with the ad id, explain's bid and value, blocked or muted advertisers,
the creative's safety checks, and budgets stopping delivery."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace

import msgspec

from tests.mixer.fakes import (
    MINUTE_MS,
    NOW_MS,
    InMemoryPostData,
    InMemoryThunder,
    InMemoryUserData,
    TableRanker,
    clients,
    query,
)
from xserve.ads.inventory import AdInventory
from xserve.config import AdsConfig, load_config
from xserve.mixer import build_for_you_pipeline, feed_response
from xserve.schema import (
    Action,
    ActionScores,
    Ad,
    AdDelivered,
    AdSlate,
    FeedSource,
    HistoryItem,
    Post,
    UserFeatures,
    VisibilityLabel,
)

VIEWER, AUTHOR, ADVERTISER = 1, 5, 8
ORGANIC = {i: Post(post_id=i, author_id=AUTHOR, text="", created_at_ms=NOW_MS - i * MINUTE_MS) for i in range(1, 31)}
CREATIVES = {900 + j: Post(post_id=900 + j, author_id=ADVERTISER, text=f"buy {j}", created_at_ms=NOW_MS - 30 * 24 * 60 * MINUTE_MS)
             for j in range(1, 5)}  # a month old: the age filter never drops a creative
HISTORY = (HistoryItem(77, 6, frozenset({Action.FAVORITE}), NOW_MS - MINUTE_MS),)


@dataclass
class InMemoryAds:
    """A real ``AdInventory`` as the mixer's ``AdsClient``."""

    inventory: AdInventory = field(default_factory=lambda: AdInventory(AdsConfig()))

    async def ad_slate(self, viewer_id: int) -> AdSlate:
        return self.inventory.slate(viewer_id)

    async def record_delivery(self, delivery: AdDelivered) -> None:
        self.inventory.apply(delivery)


def world(features: UserFeatures | None = None, budget: int = 10**9, creatives=CREATIVES, limit: int = 10,
          organic=ORGANIC):
    ads = InMemoryAds()
    for j, (post_id, post) in enumerate(creatives.items(), start=1):
        ads.inventory.apply(ads.inventory.put(Ad(j, ADVERTISER, post_id, post.author_id, bid_micros=1_000_000 * j,
                                                 budget_micros=budget)))
    features = features or UserFeatures(followed_user_ids=frozenset({AUTHOR}))
    user_data = InMemoryUserData(features={VIEWER: features}, history={VIEWER: HISTORY})
    posts = {**organic, **creatives}
    # organic posts predicted apart; every creative the same, so the bids order the ads
    ranker = TableRanker({pid: ActionScores(favorite=0.05 if pid in creatives else 0.01 * (pid % 7)) for pid in posts})
    config = load_config(environ={}, overrides={"mixer": {"result_size": limit}, "cold_start": {"enabled": False}})
    base = clients(user_data=user_data, thunder=InMemoryThunder(organic), post_data=InMemoryPostData(posts), ranker=ranker)
    pipeline = build_for_you_pipeline(config, replace(base, ads=ads))
    return pipeline, ads, user_data


def page(pipeline, **fields):
    async def run():
        result = await pipeline.execute(query(VIEWER, **fields))
        await pipeline.drain()  # the served history and the ads' charges are written after the response
        return feed_response(result)

    return asyncio.run(run())


def ad_slots(posts) -> list[int]:
    return [i for i, p in enumerate(posts) if p.source is FeedSource.AD]


def test_ads_are_served_spaced_across_pages_with_their_id_and_explain():
    pipeline, ads, user_data = world(limit=7)  # page 1 ends one organic post after its last ad: page 2 owes 2
    first = page(pipeline, explain=True)
    second = page(pipeline, is_bottom_request=True, now_ms=NOW_MS + 2 * MINUTE_MS)  # past the 60 s gap
    served = list(first.posts) + list(second.posts)
    slots = ad_slots(served)
    assert len(slots) >= 3 and 0 not in slots
    assert all(b - a - 1 >= 3 for a, b in zip(slots, slots[1:])), [p.post_id for p in served]
    assert not {p.post_id for p in first.posts} & {p.post_id for p in second.posts}
    top = first.posts[slots[0]]
    assert top.ad_id == 4 and top.post_id == 904  # the best value (the same predictions x the highest bid) first
    assert top.explain.ad_bid_micros == 4_000_000
    assert top.explain.ad_value == top.score == top.explain.weighted_score * 4
    assert all(p.ad_id is None and p.source is not FeedSource.AD for p in served if p.post_id < 900)
    charged = {a: ads.inventory.get(a).impressions for a in (1, 2, 3, 4)}
    assert sum(charged.values()) == len(slots) and charged[4] == 1


def test_an_ad_within_the_time_gap_waits():
    pipeline, _, _ = world()
    assert ad_slots(page(pipeline).posts)
    assert ad_slots(page(pipeline, is_bottom_request=True, now_ms=NOW_MS + 30_000).posts) == []  # 30 s < 60 s


def test_a_spent_budget_stops_delivery():
    pipeline, ads, _ = world(budget=4_000_000, creatives={904: CREATIVES[904]})  # ad 1 at 1.0 pays 4 impressions
    for n in range(4):
        assert ad_slots(page(pipeline, now_ms=NOW_MS + n * 2 * MINUTE_MS).posts), n
    assert ads.inventory.get(1).spent_micros == 4_000_000
    assert ad_slots(page(pipeline, now_ms=NOW_MS + 10 * MINUTE_MS).posts) == []


def test_blocked_or_muted_advertisers_are_never_served():
    for hidden in ("blocked_user_ids", "muted_user_ids"):
        features = UserFeatures(followed_user_ids=frozenset({AUTHOR}), **{hidden: frozenset({ADVERTISER})})
        response = page(world(features)[0], explain=True)
        assert ad_slots(response.posts) == [], hidden
        removed = {f.filter: f.post_ids for f in response.filtered}
        assert set(removed["AuthorSocialgraphFilter"]) == set(CREATIVES)  # here the advertiser authored them


def test_a_blocked_advertiser_of_someone_elses_creative_is_filtered_by_advertiser():
    creative = {950: Post(post_id=950, author_id=AUTHOR, text="sponsored", created_at_ms=NOW_MS - MINUTE_MS)}
    features = UserFeatures(followed_user_ids=frozenset({AUTHOR}), blocked_user_ids=frozenset({ADVERTISER}))
    pipeline, ads, _ = world(features, creatives=creative)
    response = page(pipeline, explain=True)
    assert ad_slots(response.posts) == []
    assert {f.filter: f.post_ids for f in response.filtered}["AdvertiserFilter"] == (950,)


def test_muted_keywords_and_visibility_labels_apply_to_the_creative():
    features = UserFeatures(followed_user_ids=frozenset({AUTHOR}), muted_keywords=("buy",))
    assert ad_slots(page(world(features)[0]).posts) == []
    labelled = {pid: msgspec.structs.replace(p, labels=(VisibilityLabel.SPAM,)) for pid, p in CREATIVES.items()}
    response = page(world(creatives=labelled)[0], explain=True)
    assert ad_slots(response.posts) == []
    assert set({f.filter: f.post_ids for f in response.filtered}["VisibilityFilter"]) == set(labelled)



def test_a_creative_another_source_returns_is_shown_only_as_the_ad():
    creative = Post(post_id=960, author_id=AUTHOR, text="also in-network", created_at_ms=NOW_MS - MINUTE_MS // 2)
    pipeline, _, _ = world(creatives={960: creative}, organic={**ORGANIC, 960: creative})
    response = page(pipeline, explain=True)
    copies = [p for p in response.posts if p.post_id == 960]
    assert len(copies) == 1 and copies[0].source is FeedSource.AD and copies[0].ad_id == 1
    assert {f.filter: f.post_ids for f in response.filtered}["DropDuplicatesFilter"] == (960,)  # Thunder's copy
