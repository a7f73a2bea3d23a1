"""build_for_you_pipeline: config reaches every component; degraded services still give a feed."""

from __future__ import annotations

import asyncio

from tests.mixer.fakes import NOW_MS, InMemoryPostData, InMemoryThunder, InMemoryUserData, clients, query
from xserve.config import load_config
from xserve.mixer import build_for_you_pipeline
from xserve.schema import InNetworkResponse, Post, UserFeatures


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
