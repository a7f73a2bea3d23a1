from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from xserve.config import MixerConfig, ServingConfig
from xserve.schema import (
    Action,
    EdgeKind,
    EdgeSet,
    EdgeUnset,
    Engagement,
    EngagementRecorded,
    MutedKeywordsSet,
    Served,
    UserProfile,
    UserUpserted,
)
from xserve.sharding import shard_for
from xserve.users.store import UserStore, event_user_ids


def store(shard: int = 0, num_shards: int = 1, **serving) -> UserStore:
    return UserStore(ServingConfig(**serving), MixerConfig(), shard, num_shards)


def users(s: UserStore, *ids: int) -> None:
    for u in ids:
        s.apply(UserUpserted(u, f"user{u}"))


def test_profile_follows_and_follower_counts():
    s = store()
    users(s, 1, 2, 3)
    assert s.apply(EdgeSet(1, 2, EdgeKind.FOLLOW))
    assert not s.apply(EdgeSet(1, 2, EdgeKind.FOLLOW))  # idempotent
    s.apply(EdgeSet(3, 2, EdgeKind.FOLLOW))
    assert s.profiles([2]) == {2: UserProfile(2, "user2", 2)}
    s.apply(EdgeUnset(1, 2, EdgeKind.FOLLOW))
    assert not s.apply(EdgeUnset(1, 2, EdgeKind.FOLLOW))
    assert s.profiles([2])[2].followers_count == 1
    assert s.features(1).followed_user_ids == frozenset()
    assert s.features(3).followed_user_ids == {2}


def test_blocks_mutes_subscriptions_keywords():
    s = store()
    users(s, 1, 2, 3)
    s.apply(EdgeSet(1, 2, EdgeKind.BLOCK))
    s.apply(EdgeSet(1, 3, EdgeKind.MUTE))
    s.apply(EdgeSet(1, 3, EdgeKind.SUBSCRIBE))
    s.apply(MutedKeywordsSet(1, ("crypto", "spoilers")))
    f = s.features(1)
    assert f.blocked_user_ids == {2} and f.muted_user_ids == {3} and f.subscribed_user_ids == {3}
    assert f.muted_keywords == ("crypto", "spoilers") and f.followed_user_ids == frozenset()
    assert s.profiles([2])[2].followers_count == 0  # only follows count
    s.apply(MutedKeywordsSet(1, ()))
    assert s.features(1).muted_keywords == ()


def test_query_data_and_unknown_users():
    s = store()
    users(s, 1)
    s.apply(EngagementRecorded(Engagement(user_id=1, post_id=7, author_id=9, action=Action.REPLY, timestamp_ms=5)))
    s.apply(Served(1, (7, 8), at_ms=10))
    data = s.query_data(1, history_limit=10, now_ms=10)
    assert data is not None and [i.post_id for i in data.history] == [7] and data.served_ids == (7, 8)
    assert s.query_data(2, 10, now_ms=10) is None
    s.apply(EdgeSet(1, 2, EdgeKind.FOLLOW))  # an edge to an unseen user does not create it
    assert not s.exists(2) and s.missing([1, 2]) == [2]


def test_served_history_is_bounded_and_idempotent():
    s = store(max_served_ids=3)
    users(s, 1)
    s.apply(Served(1, (1, 2, 3), at_ms=10))
    assert not s.apply(Served(1, (1, 2, 3), at_ms=10))
    s.apply(Served(1, (4, 1), at_ms=20))
    assert s.query_data(1, 0, now_ms=20).served_ids == (3, 4, 1)


def test_served_history_is_bounded_by_age():
    s = store(max_served_age_ms=100)
    users(s, 1)
    s.apply(Served(1, (1, 2), at_ms=1_000))
    s.apply(Served(1, (3,), at_ms=1_050))
    assert s.query_data(1, 0, now_ms=1_100).served_ids == (1, 2, 3)
    assert s.query_data(1, 0, now_ms=1_101).served_ids == (3,)  # read: older than max_served_age_ms is left out
    s.apply(Served(1, (4,), at_ms=1_120))
    assert s.query_data(1, 0, now_ms=0).served_ids == (3, 4)  # written: 1 and 2 were dropped


def test_check_refuses_self_edges_and_caps():
    s = store(max_edges_per_kind=2)
    users(s, 1, 2, 3, 4)
    assert "themself" in s.check(EdgeSet(1, 1, EdgeKind.FOLLOW))
    s.apply(EdgeSet(1, 2, EdgeKind.FOLLOW))
    s.apply(EdgeSet(1, 3, EdgeKind.FOLLOW))
    assert "max_edges_per_kind" in s.check(EdgeSet(1, 4, EdgeKind.FOLLOW))
    assert s.check(EdgeSet(1, 3, EdgeKind.FOLLOW)) is None  # already there: a no-op is fine
    assert s.check(EdgeSet(1, 4, EdgeKind.BLOCK)) is None


def test_load_tables_keeps_counts_consistent():
    s = store()
    s.load_users([1, 2], ["a", "b"], [0, 10])  # user 2 has 10 followers, one of them in the edges table
    s.load_edges([1], [2], ["follow"])
    assert s.profiles([2])[2].followers_count == 10
    s.apply(EdgeUnset(1, 2, EdgeKind.FOLLOW))
    assert s.profiles([2])[2].followers_count == 9


def test_shards_partition_users_and_follow_counts_cross_shards():
    n = 3
    shards = [store(i, n) for i in range(n)]
    ids = list(range(1, 40))
    events = [UserUpserted(u, f"u{u}") for u in ids] + [EdgeSet(u, (u * 7) % 39 + 1, EdgeKind.FOLLOW) for u in ids if (u * 7) % 39 + 1 != u]
    single = store()
    for e in events:
        single.apply(e)
        for u in event_user_ids(e):
            shards[shard_for(u, n)].apply(e)
    assert sum(len(s.profiles(ids)) for s in shards) == len(ids)
    merged = {k: v for s in shards for k, v in s.profiles(ids).items()}
    assert merged == single.profiles(ids)
    for u in ids:
        assert shards[shard_for(u, n)].features(u) == single.features(u)


edge_events = st.lists(
    st.builds(
        lambda cls, u, t, k: cls(u, t, k),
        st.sampled_from([EdgeSet, EdgeUnset]),
        st.integers(1, 5),
        st.integers(1, 5),
        st.sampled_from(list(EdgeKind)),
    ),
    max_size=40,
)


@settings(max_examples=50)
@given(edge_events)
def test_follower_count_always_equals_follow_edges(events):
    s = store()
    users(s, 1, 2, 3, 4, 5)
    for e in events:
        s.apply(e)
        s.apply(e)  # idempotent
    for t in range(1, 6):
        expected = sum(t in s.features(u).followed_user_ids for u in range(1, 6))
        assert s.profiles([t])[t].followers_count == expected


def test_shard_array_matches_shard_for():
    import numpy as np

    from xserve.sharding import shard_array

    ids = np.array([1, 2, 3, 10**12, 2**62, 77], dtype=np.int64)
    assert shard_array(ids, 5).tolist() == [shard_for(int(i), 5) for i in ids]


def test_load_engagement_arrays_equals_folding_every_row():
    """Oracle: the fast bulk load (newest rows per user only) == applying every engagement."""
    import numpy as np

    from xserve.schema import ACTIONS

    rng = np.random.default_rng(0)
    n = 3_000
    cols = {
        "user_id": rng.integers(1, 30, n),
        "post_id": rng.integers(1, 50, n),
        "author_id": rng.integers(1, 9, n),
        "action": rng.integers(0, len(ACTIONS), n).astype(np.int8),
        "timestamp_ms": rng.integers(0, 10**9, n),
        "dwell_ms": rng.integers(0, 1000, n),
        "product_surface": rng.integers(0, 8, n),
    }
    for shard in range(2):
        fast = store(shard, 2, max_history_items=16)
        slow = store(shard, 2, max_history_items=16)
        fast.load_engagement_arrays(cols)
        for i in np.argsort(cols["timestamp_ms"], kind="stable"):
            slow.apply(
                EngagementRecorded(
                    Engagement(
                        int(cols["user_id"][i]), int(cols["post_id"][i]), int(cols["author_id"][i]),
                        ACTIONS[cols["action"][i]], int(cols["timestamp_ms"][i]), dwell_ms=int(cols["dwell_ms"][i]),
                        product_surface=int(cols["product_surface"][i]),
                    )
                )
            )
        for u in range(1, 30):
            assert fast.history(u, 16) == slow.history(u, 16)


def test_negative_signals_keep_the_latest_per_author_and_action_bounded():
    """Issue 17 item 6: the store remembers the latest not-interested / mute / block / report per author, beyond
    the engagement sequence's reach; positive actions are not signals; the oldest go past the cap."""
    from xserve.schema import NegativeSignal

    s = store(max_negative_signals=3, max_history_items=1)
    users(s, 1)

    def act(post: int, author: int, action: Action, at: int) -> bool:
        return s.apply(EngagementRecorded(Engagement(1, post, author, action, at)))

    act(10, 7, Action.NOT_INTERESTED, 1_000)
    act(11, 7, Action.NOT_INTERESTED, 5_000)  # later, same author and action: replaces
    act(11, 7, Action.NOT_INTERESTED, 2_000)  # an older one arriving late does not replace it (5_000 below)
    act(12, 8, Action.MUTE_AUTHOR, 3_000)
    act(13, 9, Action.FAVORITE, 4_000)  # not a signal
    act(14, 9, Action.REPORT, 6_000)
    assert s.features(1).negative_feedback == (
        NegativeSignal(8, Action.MUTE_AUTHOR, 3_000), NegativeSignal(7, Action.NOT_INTERESTED, 5_000),
        NegativeSignal(9, Action.REPORT, 6_000),
    )  # oldest first, though the engagement sequence keeps one entry
    act(15, 10, Action.BLOCK_AUTHOR, 7_000)  # a fourth: the oldest (the mute of 8) goes
    assert [n.author_id for n in s.features(1).negative_feedback] == [7, 9, 10]
    assert s.query_data(1, 10, 8_000).features.negative_feedback == s.features(1).negative_feedback


def test_negative_signals_load_with_the_engagements_table():
    import numpy as np

    from xserve.schema import ACTION_INDEX, NegativeSignal

    s = store()
    cols = {"user_id": [1, 1, 2], "post_id": [10, 11, 12], "author_id": [7, 8, 7],
            "action": [ACTION_INDEX[Action.NOT_INTERESTED], ACTION_INDEX[Action.FAVORITE], ACTION_INDEX[Action.REPORT]],
            "timestamp_ms": [100, 200, 300], "dwell_ms": [0, 0, 0], "product_surface": [1, 1, 1]}
    s.load_engagement_arrays({k: np.asarray(v) for k, v in cols.items()})
    assert s.features(1).negative_feedback == (NegativeSignal(7, Action.NOT_INTERESTED, 100),)
    assert s.features(2).negative_feedback == (NegativeSignal(7, Action.REPORT, 300),)
def test_mutual_follows_are_the_followed_users_who_follow_back_on_any_shard_layout():
    """The value model's mutual-follow boost reads them (issue 17); the viewer's followers live on its shard."""
    for num_shards in (1, 3):
        shards = [store(i, num_shards) for i in range(num_shards)]

        def apply(event):
            for s in shards:
                s.apply(event)

        for u in (1, 2, 3):
            apply(UserUpserted(u, f"user{u}"))
        for u, t in ((1, 2), (2, 1), (1, 3), (3, 2)):
            apply(EdgeSet(u, t, EdgeKind.FOLLOW))
        owner = shards[shard_for(1, num_shards)]
        assert owner.features(1).mutual_follow_ids == {2}  # 3 does not follow 1 back
        apply(EdgeUnset(2, 1, EdgeKind.FOLLOW))
        assert owner.features(1).mutual_follow_ids == frozenset()


def test_declared_topics_are_set_kept_and_replaced_by_user_upserts():
    s = store()
    s.apply(UserUpserted(1, "one", topics=("music", "sports")))
    assert s.features(1).topics == ("music", "sports")
    assert not s.apply(UserUpserted(1, "one"))  # topics None: left as they are, nothing changed
    assert s.features(1).topics == ("music", "sports")
    assert s.apply(UserUpserted(1, "one", topics=()))
    assert s.features(1).topics == ()
    s.load_users([5], ["five"], [0], [["tech"]])
    assert s.features(5).topics == ("tech",)
