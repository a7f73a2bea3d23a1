"""Golden end-to-end test: the whole For You pipeline, in-process, over a small fixed world.

The world (viewer 1; ages in minutes before ``NOW_MS``):

=====  ======  =====  ===========================================================  ==========================
post   author  age    what it is                                                   fate
=====  ======  =====  ===========================================================  ==========================
100    10 al    60    original; Phoenix AND Thunder return it                      Thunder copy = duplicate
101    10 al   120    original with a 15 s video                                   kept (VQV counts)
102    11 bo   180    "Visiting NEW YORK times square"                             muted keyword "New York"
103    11 bo   3000   50 h old                                                     AgeFilter
104    12 ca    70    repost of 300 (Phoenix returned 300 first)                   RepostDeduplication
105    12 ca   130    in the request's seen_ids                                    PreviouslySeen
106    13 da    65    subscriber-only; viewer does not subscribe                   IneligibleSubscription
107    10 al   240    conversation root                                            DedupConversation
108    11 bo    75    reply to 107                                                 kept: best of conversation
109    12 ca    30    reply to 108 (conversation 107)                              DedupConversation
110     1 me    20    the viewer's own post (via Phoenix)                          SelfPost
111    11 bo    55    repost of 400 (frank's); ranked AS 400                       kept
112    12 ca    80    in the request's impression Bloom filter                     PreviouslySeen
113    13 da    85    reply to 105 (seen) -> related id seen                       PreviouslySeen
114    11 bo    90    repost of 402 "best New York pizza" (text of the original)   muted keyword "New York"
300    30 er   185    out-of-network (Phoenix)                                     kept, x0.75
301    31 fr   300    out-of-network, labelled SPAM                                VisibilityFilter
302    20      100    author blocked (Phoenix)                                     AuthorSocialgraph
303    21      110    author muted (Phoenix)                                       AuthorSocialgraph
304    31      -      Phoenix returns it but it is not in the post store          CoreDataHydration
305    30 er   360    OON, 5 s video, a net-negative prediction                    kept, last
=====  ======  =====  ===========================================================  ==========================

Ranker table (probabilities; unlisted = 0) and the hand computation, with the
default weights (favorite 0.5, reply 5, repost 1, VQV 0.05, dwell_time 0.004,
not_interested -43.2), offset 0.001, positive sum 43.054, negative sum 367.2:

=====  ===========================================  =========  ==========  ======  ==========
post   probabilities                                weighted   diversity   OON     final
=====  ===========================================  =========  ==========  ======  ==========
108    fav .3, reply .2                             1.151      1 (bo #1)   1       1.151
100    fav .5, reply .1                             0.751      1 (al #1)   1       0.751
300    fav .6, repost .2                            0.501      1 (er #1)   0.75    0.37575
301    fav .9                                       0.451      1 (fr #1)   0.75    0.33825
111    (as 400) fav .8                              0.401      .625 (bo#2) 1       0.250625
101    fav .4, VQV .5 (15 s video), dwell_time 10   0.266      .625 (al#2) 1       0.16625
109    fav .1                                       0.051      1 (ca #1)   1       0.051
107    fav .2                                       0.101      .4375 (al3) 1       0.0441875
305    fav .2, VQV .9 (5 s: not counted), n_i .01   (-0.332 + 367.2) / 410.254 * 0.001  x .625 x .75
=====  ===========================================  =========  ==========  ======  ==========

Top-K order 108 100 300 301 111 101 109 107 305; post-selection drops 301
(label) and 109, 107 (same conversation as 108, lower score).
"""

from __future__ import annotations

import asyncio
import math

import msgspec
import pytest

from tests.mixer.fakes import (
    MINUTE_MS,
    NOW_MS,
    InMemoryPostData,
    InMemoryRetrieval,
    InMemoryThunder,
    InMemoryUserData,
    TableRanker,
    clients,
)
from xserve.config import XServeConfig, merge_config
from xserve.mixer import ForYouQuery, build_for_you_pipeline, feed_response
from xserve.mixer.bloom import BloomFilterBuilder
from xserve.schema import (
    Action,
    ActionScores,
    FeedRequest,
    HistoryItem,
    Media,
    MediaKind,
    Post,
    RetrievedPost,
    ServedType,
    UserFeatures,
    UserProfile,
    VisibilityLabel,
)

VIEWER = 1


def _post(post_id: int, author_id: int, age_min: int, **fields) -> Post:
    return Post(post_id=post_id, author_id=author_id, created_at_ms=NOW_MS - age_min * MINUTE_MS, **fields)


def world():
    video = lambda ms: (Media(MediaKind.VIDEO, ms),)  # noqa: E731
    posts = [
        _post(100, 10, 60, text="hello world"),
        _post(101, 10, 120, text="my cat", media=video(15_000)),
        _post(102, 11, 180, text="Visiting NEW YORK times square"),
        _post(103, 11, 3000, text="old news"),
        _post(104, 12, 70, repost_of_post_id=300, repost_of_user_id=30),
        _post(105, 12, 130, text="seen already"),
        _post(106, 13, 65, text="for subscribers", subscription_only=True),
        _post(107, 10, 240, text="thread root"),
        _post(108, 11, 75, text="a reply", in_reply_to_post_id=107, in_reply_to_user_id=10, conversation_id=107),
        _post(109, 12, 30, text="a reply to a reply", in_reply_to_post_id=108, in_reply_to_user_id=11, conversation_id=107),
        _post(110, VIEWER, 20, text="my own post"),
        _post(111, 11, 55, repost_of_post_id=400, repost_of_user_id=31),
        _post(112, 12, 80, text="impressed on another device"),
        _post(113, 13, 85, text="replying to a seen post", in_reply_to_post_id=105, conversation_id=105),
        _post(114, 11, 90, repost_of_post_id=402, repost_of_user_id=31),
        _post(300, 30, 185, text="out of network"),
        _post(301, 31, 300, text="spammy", labels=(VisibilityLabel.SPAM,)),
        _post(302, 20, 100, text="from a blocked account"),
        _post(303, 21, 110, text="from a muted account"),
        _post(305, 30, 360, text="short clip", media=video(5_000)),
        _post(400, 31, 600, text="frank's original"),
        _post(402, 31, 700, text="best New York pizza"),
    ]
    by_id = {p.post_id: p for p in posts}
    profiles = {
        u: UserProfile(u, name, followers)
        for u, name, followers in [
            (10, "alice", 100), (11, "bob", 200), (12, "carol", 300), (13, "dave", 400),
            (30, "erin", 5000), (31, "frank", 6000), (20, "blocked", 1), (21, "muted", 1),
        ]
    }
    features = UserFeatures(
        followed_user_ids=frozenset({10, 11, 12, 13}),
        blocked_user_ids=frozenset({20}),
        muted_user_ids=frozenset({21}),
        muted_keywords=("New York",),
        subscribed_user_ids=frozenset(),
    )
    history = (HistoryItem(post_id=900, author_id=30, actions=frozenset({Action.FAVORITE}), timestamp_ms=NOW_MS - 10 * MINUTE_MS),)
    retrieved = [RetrievedPost(i, by_id[i].author_id if i in by_id else 31, 1.0 - n / 10) for n, i in enumerate(
        [300, 301, 100, 110, 302, 303, 304, 305]
    )]
    table = {
        108: ActionScores(favorite=0.3, reply=0.2),
        100: ActionScores(favorite=0.5, reply=0.1),
        300: ActionScores(favorite=0.6, repost=0.2),
        301: ActionScores(favorite=0.9),
        400: ActionScores(favorite=0.8),
        101: ActionScores(favorite=0.4, video_quality_view=0.5, dwell_time=10.0),
        109: ActionScores(favorite=0.1),
        107: ActionScores(favorite=0.2),
        305: ActionScores(favorite=0.2, video_quality_view=0.9, not_interested=0.01),
    }
    user_data = InMemoryUserData(features={VIEWER: features}, history={VIEWER: history})
    thunder = InMemoryThunder({i: p for i, p in by_id.items() if p.author_id in features.followed_user_ids})
    return (
        user_data,
        thunder,
        InMemoryRetrieval({VIEWER: retrieved}),
        InMemoryPostData(by_id, profiles),
        TableRanker(table),
    )


def request(**fields) -> FeedRequest:
    bloom = BloomFilterBuilder(expected_items=100)
    bloom.add(112)
    return FeedRequest(viewer_id=VIEWER, seen_ids=(105,), bloom_filters=(bloom.build(),), explain=True, **fields)


# the January pipeline this world's hand computation describes: the issue-17 additions without clients here (popular
# source, cold start) are absent, the negative-feedback scorer (no client needed) is turned off, and the weighted
# scorer is selected instead of the value model (whose own checks are in test_value_model.py)
JANUARY = merge_config(XServeConfig(), {"negative_feedback": {"enabled": False}, "scoring": {"scorer": "weighted"}})


def run_feed(ranker_fails: bool = False, config: XServeConfig = JANUARY, **request_fields):
    user_data, thunder, retrieval, post_data, ranker = world()
    ranker.fail = ranker_fails
    pipeline = build_for_you_pipeline(config, clients(user_data, thunder, retrieval, post_data, ranker))

    async def go():
        q = ForYouQuery.from_request(request(**request_fields), request_id="golden-1", now_ms=NOW_MS)
        result = await pipeline.execute(q)
        await pipeline.drain()
        return result

    result = asyncio.run(go())
    return feed_response(result), user_data, ranker


def test_golden_feed_exact_order_and_filters():
    resp, user_data, ranker = run_feed()
    assert [p.post_id for p in resp.posts] == [108, 100, 300, 111, 101, 305]
    assert resp.degraded == ()
    assert {f.filter: f.post_ids for f in resp.filtered} == {
        "DropDuplicatesFilter": (100,),
        "CoreDataHydrationFilter": (304,),
        "AgeFilter": (103,),
        "SelfPostFilter": (110,),
        "RepostDeduplicationFilter": (104,),
        "IneligibleSubscriptionFilter": (106,),
        "PreviouslySeenFilter": (112, 113, 105),  # Thunder order: newest first
        "MutedKeywordFilter": (114, 102),
        "AuthorSocialgraphFilter": (302, 303),
        "VisibilityFilter": (301,),
        "DedupConversationFilter": (109, 107),
    }
    # served history was recorded after the response, by the side effect
    assert user_data.served == [(VIEWER, [108, 100, 300, 111, 101, 305], NOW_MS)]
    # the repost was ranked as its original post and author
    ranked = {c.post_id: c.author_id for c in ranker.requests[0].candidates}
    assert ranked[400] == 31 and 111 not in ranked


def test_golden_feed_posts_and_explain_numbers():
    resp, _, _ = run_feed()
    by_id = {p.post_id: p for p in resp.posts}
    scores = [p.score for p in resp.posts]
    expected_305 = (-0.332 + 367.2) / 410.254 * 0.001 * 0.625 * 0.75
    assert scores == pytest.approx([1.151, 0.751, 0.37575, 0.250625, 0.16625, expected_305], rel=1e-9)

    # post 101, by hand: 0.5*0.4 + 0.05*0.5 (15 s video > 10 s) + 0.004*10 = 0.265; +0.001 offset;
    # alice's second post: x0.625; in-network: x1
    e = by_id[101].explain
    assert e.weighted_score == pytest.approx(0.266, rel=1e-12)
    assert (e.diversity_multiplier, e.oon_multiplier, e.source) == (0.625, 1.0, ServedType.IN_NETWORK)
    assert by_id[101].score == pytest.approx(0.266 * 0.625, rel=1e-12)

    # the Phoenix copy of 100 won the duplicate; alice is followed, so it counts as in-network
    p100 = by_id[100]
    assert (p100.served_type, p100.in_network, p100.explain.oon_multiplier) == (ServedType.RETRIEVAL, True, 1.0)
    assert p100.explain.retrieval_score == pytest.approx(0.8)
    assert by_id[300].in_network is False and by_id[300].explain.oon_multiplier == 0.75
    # repost carries its original and both screen names; the reply carries its ancestors
    assert (by_id[111].repost_of_post_id, by_id[111].screen_names) == (400, {11: "bob", 31: "frank"})
    assert by_id[108].ancestors == (107,) and by_id[108].in_reply_to_post_id == 107
    # the negative prediction is squeezed below every positive one
    assert 0 < by_id[305].explain.weighted_score < 0.001


def test_golden_trace_names_every_component_in_order():
    resp, _, _ = run_feed()
    components = [r.component for r in resp.trace]
    assert components == [
        "UserActionSeqQueryHydrator", "UserFeaturesQueryHydrator", "ServedHistoryQueryHydrator",
        "PhoenixSource", "ThunderSource",
        "InNetworkHydrator", "CoreDataHydrator", "VideoDurationHydrator", "SubscriptionHydrator", "AuthorInfoHydrator",
        "DropDuplicatesFilter", "CoreDataHydrationFilter", "AgeFilter", "SelfPostFilter", "RepostDeduplicationFilter",
        "IneligibleSubscriptionFilter", "PreviouslySeenFilter", "PreviouslyServedFilter", "MutedKeywordFilter",
        "AuthorSocialgraphFilter",
        "PhoenixScorer", "WeightedScorer", "AuthorDiversityScorer", "OONScorer", "RecencyFallbackScorer",
        "TopKScoreSelector", "VisibilityHydrator", "VisibilityFilter", "DedupConversationFilter",
    ]
    statuses = {r.component: r.status for r in resp.trace}
    assert statuses["PreviouslyServedFilter"] == "disabled"  # not a bottom request
    assert all(s in ("ok", "disabled") for s in statuses.values())
    sources = {r.component: r.count_out for r in resp.trace if r.stage == "source"}
    assert sources == {"PhoenixSource": 8, "ThunderSource": 14}


def test_ranker_down_feed_falls_back_to_recency():
    resp, _, _ = run_feed(ranker_fails=True)
    # survivors newest first: 109 (30 min) 111 (55) 100 (60) 108 (75) 101 (120) 300 (185) 107 (240) 301 305;
    # 301 is labelled; 108 and 107 share 109's conversation and score lower
    assert [p.post_id for p in resp.posts] == [109, 111, 100, 101, 300, 305]
    assert resp.degraded == ("PhoenixScorer",)
    assert [p.score for p in resp.posts] == pytest.approx([-1 - m / 60 for m in (30, 55, 60, 120, 185, 360)])
    assert all(p.explain.action_scores is None and p.explain.weighted_score is None for p in resp.posts)


def test_in_network_only_bottom_request_with_a_limit():
    resp, user_data, _ = run_feed(in_network_only=True, is_bottom_request=True, served_ids=(111,), limit=2)
    # no Phoenix: 100 comes from Thunder; 111 was served; 300 is gone (and with it, 104 is kept)
    assert [p.post_id for p in resp.posts] == [108, 100]
    assert all(p.served_type is ServedType.IN_NETWORK for p in resp.posts)
    assert {f.filter: f.post_ids for f in resp.filtered}["PreviouslyServedFilter"] == (111,)
    assert user_data.served == []  # no served-history write for in-network-only feeds
    assert not math.isnan(resp.posts[0].score)
