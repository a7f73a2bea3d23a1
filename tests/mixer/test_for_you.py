"""build_for_you_pipeline: config reaches every component; degraded services still give a feed."""

from __future__ import annotations

import asyncio

from tests.mixer.fakes import (
    MINUTE_MS,
    NOW_MS,
    InMemoryPostData,
    InMemoryRetrieval,
    InMemoryThunder,
    InMemoryUserData,
    TableRanker,
    clients,
    query,
)
from xserve.config import load_config
from xserve.mixer import build_for_you_pipeline
from xserve.schema import Action, HistoryItem, InNetworkResponse, Post, RetrievedPost, UserFeatures, VisibilityLabel


def test_config_sets_sizes_ages_and_per_stage_timeouts():
    config = load_config(environ={}, overrides={"mixer": {
        "top_k": 7, "result_size": 3, "max_post_age_ms": 1000, "thunder_max_results": 11,
        "retrieval_max_results": 12, "history_length": 13, "source_timeout_s": 0.25, "filter_timeout_s": 0.05,
    }, "scoring": {"oon_weight_factor": 0.5}})
    p = build_for_you_pipeline(config, clients())
    assert repr(p.selector) == "TopKScoreSelector(size=7)"  # synchronous: no timeout
    assert repr(p.filters[2]) == "AgeFilter(max_age_ms=1000, timeout_s=0.05)"
    assert [repr(s) for s in p.sources] == [
        "PhoenixSource(max_results=12, timeout_s=0.25)", "ThunderSource(max_results=11, timeout_s=0.25)",
    ]
    assert p.query_hydrators[0].history_length == 13 and p.scorers[3].factor == 0.5
    assert p.result_size(query()) == 3 and p.result_size(query(limit=2)) == 2
    assert p.request_timeout_s == config.mixer.request_timeout_s
    stages = [p.query_hydrators, p.hydrators, p.scorers, p.post_selection_hydrators, p.side_effects]
    assert all(c.timeout_s is not None for stage in stages for c in stage)


def test_failing_user_store_and_sources_still_return_a_response():
    class Down(InMemoryUserData):
        async def user_features(self, user_id):
            raise ConnectionError("user store down")

        async def engagement_history(self, user_id, limit):
            raise ConnectionError("user store down")

    p = build_for_you_pipeline(load_config(environ={}), clients(user_data=Down()))
    result = asyncio.run(p.execute(query()))
    assert result.selected == []
    assert result.degraded == [
        "UserActionSeqQueryHydrator", "UserFeaturesQueryHydrator", "PhoenixSource", "ThunderSource",
    ]


def test_slow_thunder_times_out_and_the_rest_of_the_feed_is_served():
    class Slow(InMemoryThunder):
        async def in_network_posts(self, req):
            await asyncio.sleep(5)
            return InNetworkResponse([])

    features = UserFeatures(followed_user_ids=frozenset({5}))
    thunder_posts = {1: Post(post_id=1, author_id=5, created_at_ms=NOW_MS)}
    config = load_config(environ={}, overrides={"mixer": {"source_timeout_s": 0.05}})
    user_data = InMemoryUserData(features={1: features})
    p = build_for_you_pipeline(config, clients(user_data=user_data, thunder=Slow(thunder_posts)))
    result = asyncio.run(p.execute(query()))
    timed_out = [r for r in result.reports if r.component == "ThunderSource"]
    assert timed_out[0].status == "timeout" and "ThunderSource" in result.degraded


def test_two_pages_in_a_row_share_no_post():
    """Page 1, then a bottom ("load more") request whose client sends no served_ids: the served history the side
    effect recorded keeps page 1's posts out of page 2; ids the client does send are excluded as well."""
    followed = UserFeatures(followed_user_ids=frozenset({5}))
    posts = {i: Post(post_id=i, author_id=5, text="", created_at_ms=NOW_MS - i * 60_000) for i in range(1, 13)}
    user_data = InMemoryUserData(features={1: followed})
    config = load_config(environ={}, overrides={"mixer": {"result_size": 4}})
    p = build_for_you_pipeline(config, clients(user_data=user_data, thunder=InMemoryThunder(posts),
                                               post_data=InMemoryPostData(posts)))

    async def page(**fields) -> list[int]:
        result = await p.execute(query(**fields))
        await p.drain()  # the served-history write runs after the response
        return [c.post_id for c in result.selected]

    async def pages():
        return await page(), await page(is_bottom_request=True), await page(is_bottom_request=True, served_ids=frozenset({9}))

    first, second, third = asyncio.run(pages())
    assert len(first) == len(second) == 4 and not set(first) & set(second)
    assert len(third) == 3 and not set(third) & (set(first) | set(second) | {9})


def test_a_thunder_shard_left_out_is_named_in_degraded_and_the_other_shards_posts_are_served():
    from xserve.mixer import feed_response

    class OneShardDown(InMemoryThunder):
        async def in_network_posts(self, req):
            answer = await super().in_network_posts(req)
            return InNetworkResponse(answer.posts, left_out=("thunder_shard_1",))

    posts = {1: Post(post_id=1, author_id=5, created_at_ms=NOW_MS - 60_000)}
    user_data = InMemoryUserData(features={1: UserFeatures(followed_user_ids=frozenset({5}))})
    p = build_for_you_pipeline(
        load_config(environ={}), clients(user_data=user_data, thunder=OneShardDown(posts), post_data=InMemoryPostData(posts))
    )
    response = feed_response(asyncio.run(p.execute(query())))
    assert [s.post_id for s in response.posts] == [1]
    assert "thunder_shard_1" in response.degraded and "ThunderSource" not in response.degraded


def test_a_request_past_its_deadline_still_checks_visibility_and_serves_recency_order():
    """Issue 13: the ranker answers after the request deadline; safety stages still run, the feed is by age."""

    class SlowRanker(TableRanker):
        async def rank(self, req):
            await asyncio.sleep(0.3)
            return await super().rank(req)

    def post(post_id: int, author_id: int, age_min: int, **kw) -> Post:
        return Post(post_id=post_id, author_id=author_id, created_at_ms=NOW_MS - age_min * MINUTE_MS, **kw)

    followed = {100: post(100, 5, 4, labels=(VisibilityLabel.SPAM,)), 101: post(101, 5, 1)}
    recommended = {102: post(102, 7, 3), 103: post(103, 8, 2)}
    user_data = InMemoryUserData(
        features={1: UserFeatures(followed_user_ids=frozenset({5}))},
        history={1: (HistoryItem(9, 9, frozenset({Action.FAVORITE}), NOW_MS - MINUTE_MS),)},
    )
    retrieval = InMemoryRetrieval({1: [RetrievedPost(102, 7, 0.9), RetrievedPost(103, 8, 0.8)]})
    config = load_config(environ={}, overrides={"mixer": {"request_timeout_s": 0.25}})
    p = build_for_you_pipeline(config, clients(
        user_data=user_data, thunder=InMemoryThunder(followed), retrieval=retrieval,
        post_data=InMemoryPostData({**followed, **recommended}), ranker=SlowRanker(),
    ))
    result = asyncio.run(p.execute(query()))
    status = {r.component: r.status for r in result.reports}
    assert status["PhoenixScorer"] == "timeout" and status["VisibilityHydrator"] == "ok"
    assert [c.post_id for c in result.selected] == [101, 103, 102]  # newest first; 100 is spam
    assert [c.post_id for c in result.filtered["VisibilityFilter"]] == [100]


def test_the_safety_stages_run_past_the_deadline_and_fail_closed():
    p = build_for_you_pipeline(load_config(environ={}), clients())
    stages = [*p.query_hydrators, *p.hydrators, *p.filters, *p.scorers, p.selector,
              *p.post_selection_hydrators, *p.post_selection_filters]
    assert [c.name for c in stages if c.fail_closed] == [
        "UserFeaturesQueryHydrator", "CoreDataHydrator", "SubscriptionHydrator", "CoreDataHydrationFilter",
        "IneligibleSubscriptionFilter", "MutedKeywordFilter", "AuthorSocialgraphFilter", "TopKScoreSelector",
        "VisibilityHydrator", "VisibilityFilter",
    ]
    skipped_when_late = [c.name for c in stages if not c.runs_past_deadline]
    assert skipped_when_late == [
        "UserActionSeqQueryHydrator", "ServedHistoryQueryHydrator", "VideoDurationHydrator", "AuthorInfoHydrator",
        "PhoenixScorer",
    ]


def test_config_sets_the_two_visibility_levels():
    config = load_config(environ={}, overrides={"mixer": {
        "in_network_visibility_drop": ["deleted"], "out_of_network_visibility_drop": ["deleted", "spam"],
    }})
    (hydrator,) = build_for_you_pipeline(config, clients()).post_selection_hydrators
    assert (hydrator.in_network_drop, hydrator.out_of_network_drop) == (("deleted",), ("deleted", "spam"))
