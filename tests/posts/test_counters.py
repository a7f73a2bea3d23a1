"""PostCounters: causal counts of distinct viewers, the popular ranking, and the shard merge (issue 17 item 3)."""

from __future__ import annotations

import random

from xserve.clock import HOUR_MS, MINUTE_MS
from xserve.config import PopularConfig
from xserve.posts import PostCounters, merge_popular
from xserve.schema import Action, Engagement, PopularRequest, PostStats, ServedPostRef
from xserve.sharding import shard_for

NOW = 1_800_000_000_000
COUNTED = PopularConfig().counted_actions


def eng(user: int, post: int, action: Action = Action.FAVORITE, at: int = NOW, created: int | None = NOW - HOUR_MS,
        author: int = 7) -> Engagement:
    return Engagement(user_id=user, post_id=post, author_id=author, action=action, timestamp_ms=at,
                      post_created_at_ms=created)


def popular(counters: PostCounters, now: int = NOW, limit: int = 500, min_users: int = 1, max_age: int = 24 * HOUR_MS):
    return counters.popular(PopularRequest(now, max_age, limit, min_users))


def test_counts_are_of_distinct_viewers_and_causal():
    c = PostCounters(COUNTED, 48 * HOUR_MS)
    assert c.record_engagement(eng(1, 100))
    assert not c.record_engagement(eng(1, 100, at=NOW + 5))  # the same viewer again: counted once
    assert c.record_engagement(eng(1, 100, Action.REPLY, at=NOW + 10)) is False  # another action, same viewer
    assert c.record_engagement(eng(2, 100, Action.REPOST, at=NOW + MINUTE_MS))
    assert not c.record_engagement(eng(3, 100, Action.NOT_INTERESTED))  # negatives never count
    assert not c.record_engagement(eng(4, 100, created=None))  # the post's age is unknown: not counted
    assert c.stats([100, 101], NOW + MINUTE_MS) == {100: PostStats(engaged_users=2, favorites=1)}
    # as of an earlier time, the later viewer is not counted yet (causal)
    assert c.stats([100], NOW)[100].engaged_users == 1
    assert c.stats([100], NOW - 1)[100].engaged_users == 0
    # a viewer's first action counts from its own time, even when it arrives late
    c.record_engagement(eng(5, 100, at=NOW - 10))
    assert c.stats([100], NOW - 10)[100].engaged_users == 1


def test_impressions_count_each_viewer_once_and_only_recent_posts():
    c = PostCounters(COUNTED, 48 * HOUR_MS)
    refs = [ServedPostRef(100, 7, NOW - HOUR_MS), ServedPostRef(101, 8, NOW - 49 * HOUR_MS)]  # 101: past retention
    assert c.record_served(1, refs, NOW) == 1
    assert c.record_served(1, refs, NOW + 1) == 0  # a refresh serving it again to the same viewer
    assert c.record_served(2, refs[:1], NOW + 2) == 1
    assert c.impressions([100, 101, 102], NOW + 2) == {100: 2}
    assert c.impressions([100], NOW + 1) == {100: 1}


def test_popular_orders_by_engaged_viewers_then_newest_within_the_window():
    c = PostCounters(COUNTED, 48 * HOUR_MS)
    for users, post, age in ((3, 100, 2), (5, 101, 3), (3, 102, 1), (9, 103, 30), (1, 104, 1)):
        for u in range(users):
            c.record_engagement(eng(u + 1, post, created=NOW - age * HOUR_MS, at=NOW - MINUTE_MS))
    ranked = popular(c)
    assert [(p.post_id, p.engaged_users) for p in ranked] == [(101, 5), (102, 3), (100, 3), (104, 1)]  # 103: a day+ old
    assert [p.post_id for p in popular(c, limit=2)] == [101, 102]
    assert [p.post_id for p in popular(c, min_users=3)] == [101, 102, 100]
    assert popular(c, now=NOW - 2 * MINUTE_MS) == []  # before any engagement: nothing is popular yet
    assert c.trim(NOW + 20 * HOUR_MS) == 1 and len(c) == 4  # 103 (created 30 h before NOW) is past the 48 h retention


def test_merging_shards_equals_one_shard_holding_everything():
    """Oracle: the client's merge of per-shard answers == the answer of a single shard with every post."""
    rng = random.Random(0)
    whole, shards = PostCounters(COUNTED, 48 * HOUR_MS), [PostCounters(COUNTED, 48 * HOUR_MS) for _ in range(3)]
    for _ in range(2_000):
        e = eng(rng.randrange(1, 60), rng.randrange(1, 300), rng.choice(list(Action)), at=NOW - rng.randrange(HOUR_MS),
                created=NOW - 2 * HOUR_MS - rng.randrange(10) * HOUR_MS)
        e = Engagement(**{**{f: getattr(e, f) for f in e.__struct_fields__},
                          "post_created_at_ms": NOW - 2 * HOUR_MS - (e.post_id % 10) * HOUR_MS})  # one age per post
        whole.record_engagement(e)
        shards[shard_for(e.post_id, 3)].record_engagement(e)
    for limit in (1, 10, 500):
        req = PopularRequest(NOW - HOUR_MS // 2, 6 * HOUR_MS, limit, 2)
        assert merge_popular((s.popular(req) for s in shards), limit) == whole.popular(req)


def test_a_ranking_is_reused_while_fresh_and_never_for_an_earlier_time():
    c = PostCounters(COUNTED, 48 * HOUR_MS, refresh_ms=1_000)
    for u in (1, 2):
        c.record_engagement(eng(u, 100, at=NOW - 10))
    assert [p.post_id for p in popular(c, now=NOW)] == [100]
    for u in (1, 2, 3):
        c.record_engagement(eng(u, 101, at=NOW + 10))
    assert [p.post_id for p in popular(c, now=NOW + 500)] == [100]  # reused: up to refresh_ms stale
    assert [p.post_id for p in popular(c, now=NOW - 20)] == []  # an earlier time is computed, never served from later
    assert [p.post_id for p in popular(c, now=NOW + 1_500)] == [101, 100]  # stale: ranked again
    assert [p.post_id for p in popular(c, now=NOW + 1_600, min_users=3)] == [101]  # another minimum: its own ranking
    assert [p.post_id for p in popular(c, now=NOW + 1_700, limit=1)] == [101]
