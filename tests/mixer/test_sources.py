"""The popular source (issue 17 item 3), and the issue-17 components in the built pipeline."""

from __future__ import annotations

import asyncio

from tests.mixer.fakes import (
    MINUTE_MS,
    NOW_MS,
    CountersClient,
    InMemoryPostData,
    InMemoryUserData,
    TableRanker,
    clients,
    query,
)
from xserve.clock import HOUR_MS
from xserve.config import PopularConfig, load_config
from xserve.mixer import build_for_you_pipeline, feed_response
from xserve.mixer.sources import PopularSource
from xserve.posts import PostCounters
from xserve.schema import Action, ActionScores, Engagement, FeedSource, HistoryItem, Post, ServedType, UserFeatures

HISTORY = (HistoryItem(900, 90, frozenset({Action.FAVORITE}), NOW_MS - HOUR_MS),)


def popular_world(engaged: dict[int, int], author: dict[int, int]) -> CountersClient:
    """Counters where post ``p`` (by ``author[p]``, an hour old) drew ``engaged[p]`` favoriting viewers."""
    c = PostCounters(PopularConfig().counted_actions, 48 * HOUR_MS)
    for pid, n in engaged.items():
        for viewer in range(n):
            c.record_engagement(Engagement(500 + viewer, pid, author[pid], Action.FAVORITE, NOW_MS - MINUTE_MS,
                                           post_created_at_ms=NOW_MS - HOUR_MS))
    return CountersClient(c)


def test_popular_source_takes_the_most_engaged_recent_posts_and_says_so():
    stats = popular_world({1: 5, 2: 9, 3: 1}, {1: 10, 2: 11, 3: 12})
    source = PopularSource(stats, PopularConfig(max_results=2))
    cands = asyncio.run(source.get_candidates(query()))
    assert [(c.post_id, c.author_id, c.popular_engaged_users) for c in cands] == [(2, 11, 9), (1, 10, 5)]
    assert {c.served_type for c in cands} == {ServedType.POPULAR} and cands[0].source is FeedSource.POPULAR
    assert cands[0].created_at_ms == NOW_MS - HOUR_MS
    assert not source.enable(query(in_network_only=True)) and source.enable(query())
    assert repr(source) == "PopularSource(max_results=2, max_age_ms=86400000, min_engaged_users=2)"


def test_the_pipeline_serves_popular_posts_counts_impressions_and_keeps_blocks_hard():
    """Popular posts reach the feed with ``source: "popular"``; the feed's posts are counted as impressions after
    the response; a blocked author's popular post is filtered, never just demoted (item 6's rule)."""
    posts = {pid: Post(post_id=pid, author_id=a, created_at_ms=NOW_MS - HOUR_MS, text=f"post {pid}")
             for pid, a in ((1, 10), (2, 11), (3, 12))}
    stats = popular_world({1: 5, 2: 9, 3: 7}, {1: 10, 2: 11, 3: 12})
    user_data = InMemoryUserData(features={1: UserFeatures(blocked_user_ids=frozenset({12}))}, history={1: HISTORY})
    ranker = TableRanker({1: ActionScores(favorite=0.5), 2: ActionScores(favorite=0.2), 3: ActionScores(favorite=0.9)})
    pipeline = build_for_you_pipeline(
        load_config(environ={}), clients(user_data, post_data=InMemoryPostData(posts), ranker=ranker, counters=stats)
    )
    assert [s.name for s in pipeline.sources] == ["PhoenixSource", "ThunderSource", "PopularSource"]
    assert [s.name for s in pipeline.scorers][-3:] == ["NegativeFeedbackScorer", "ColdStartScorer", "RecencyFallbackScorer"]
    async def serve():
        result = await pipeline.execute(query(explain=True))
        await pipeline.drain()  # the side effects, after the response: served history and impression counts
        return result

    response = feed_response(asyncio.run(serve()))
    assert [(p.post_id, p.source) for p in response.posts] == [(1, FeedSource.POPULAR), (2, FeedSource.POPULAR)]
    assert [p.explain.popular_engaged_users for p in response.posts] == [5, 9]
    assert response.posts[0].served_type is ServedType.POPULAR and response.posts[0].in_network is False
    assert {f.filter: f.post_ids for f in response.filtered}["AuthorSocialgraphFilter"] == (3,)
    assert stats.counters.impressions([1, 2, 3], NOW_MS) == {1: 1, 2: 1, 3: 0}
    # turned off in config, the source is left out of the pipeline
    off = build_for_you_pipeline(load_config(environ={}, overrides={"popular": {"enabled": False}}),
                                 clients(counters=stats))
    assert [s.name for s in off.sources] == ["PhoenixSource", "ThunderSource"]
