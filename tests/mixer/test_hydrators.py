"""Query hydrators, sources, candidate hydrators and the served-history side effect."""

from __future__ import annotations

import asyncio

import pytest

from tests.mixer.fakes import (
    NOW_MS,
    InMemoryPostData,
    InMemoryRetrieval,
    InMemoryThunder,
    InMemoryUserData,
    cand,
    query,
)
from xserve.mixer.hydrators import (
    AuthorInfoHydrator,
    CoreDataHydrator,
    InNetworkHydrator,
    SubscriptionHydrator,
    VideoDurationHydrator,
)
from xserve.mixer.query_hydrators import ServedHistoryQueryHydrator, UserActionSeqQueryHydrator, UserFeaturesQueryHydrator
from xserve.mixer.side_effects import ServedHistorySideEffect
from xserve.mixer.sources import PhoenixSource, ThunderSource
from xserve.pipeline import Status
from xserve.schema import (
    Action,
    HistoryItem,
    Media,
    MediaKind,
    Post,
    RetrievedPost,
    ServedType,
    UserFeatures,
    UserProfile,
    UserQueryData,
)


def hydrate(hydrator, cands, q=None):
    values, report = asyncio.run(hydrator.run(q or query(), cands))
    assert report.status is Status.OK, report
    hydrator.update_all(cands, values)
    return cands


def item(post_id: int) -> HistoryItem:
    return HistoryItem(post_id, 1, frozenset({Action.FAVORITE}), NOW_MS - post_id)


# ---------------------------------------------------------------- query hydrators


def test_query_hydrators_fill_only_their_fields():
    store = InMemoryUserData(
        features={1: UserFeatures(followed_user_ids=frozenset({5}))}, history={1: tuple(item(i) for i in range(10))}
    )
    q = query()
    seq = UserActionSeqQueryHydrator(store, history_length=3)
    seq.update(q, asyncio.run(seq.hydrate(q)))
    assert [h.post_id for h in q.history] == [7, 8, 9] and q.user_features is None
    feats = UserFeaturesQueryHydrator(store)
    feats.update(q, asyncio.run(feats.hydrate(q)))
    assert q.user_features.followed_user_ids == {5}
    assert repr(seq) == "UserActionSeqQueryHydrator(history_length=3)"


def test_query_hydrators_read_the_viewer_data_the_query_carries_instead_of_calling_the_store():
    data = UserQueryData(1, UserFeatures(followed_user_ids=frozenset({5})), tuple(item(i) for i in range(10)))
    store = InMemoryUserData(features={1: UserFeatures()}, history={1: ()})  # what a call would answer
    q = query(viewer_data=data)
    assert asyncio.run(UserFeaturesQueryHydrator(store).hydrate(q)) is data.features
    assert [h.post_id for h in asyncio.run(UserActionSeqQueryHydrator(store, history_length=3).hydrate(q))] == [7, 8, 9]


def test_the_history_gets_its_posts_texts_in_one_read_and_goes_without_them_when_the_read_fails():
    store = InMemoryUserData(history={1: tuple(item(i) for i in range(1, 6))})
    posts = InMemoryPostData(posts={i: Post(i, 1, NOW_MS - 10, text=f"post {i}" if i != 3 else "") for i in (2, 3, 4, 5)})
    history = asyncio.run(UserActionSeqQueryHydrator(store, history_length=4, post_data=posts).hydrate(query()))
    assert [(h.post_id, h.text) for h in history] == [(2, "post 2"), (3, ""), (4, "post 4"), (5, "post 5")]
    assert posts.calls == 1

    class Failing(InMemoryPostData):
        async def get_posts(self, post_ids):
            raise TimeoutError("posts actor busy")

    history = asyncio.run(UserActionSeqQueryHydrator(store, history_length=4, post_data=Failing()).hydrate(query()))
    assert [(h.post_id, h.text) for h in history] == [(2, ""), (3, ""), (4, ""), (5, "")]


def test_served_history_is_read_on_bottom_for_you_requests_only():
    store = InMemoryUserData(served=[(1, [7, 8], NOW_MS - 1), (2, [9], NOW_MS)])
    hydrator = ServedHistoryQueryHydrator(store)
    q = query(is_bottom_request=True, served_ids=frozenset({3}))
    hydrator.update(q, asyncio.run(hydrator.hydrate(q)))
    assert q.served_history == {7, 8} and q.previously_served == {3, 7, 8}
    data = UserQueryData(1, UserFeatures(), (), served_ids=(5,))  # the answer the ingress fetched: no store call
    assert asyncio.run(hydrator.hydrate(query(is_bottom_request=True, viewer_data=data))) == {5}
    for off in (query(), query(is_bottom_request=True, in_network_only=True)):  # nothing served is recorded for those
        assert asyncio.run(hydrator.run(off))[1].status is Status.DISABLED


# ---------------------------------------------------------------- sources


def test_thunder_source_builds_ancestors_and_in_network_candidates():
    posts = {
        1: Post(post_id=1, author_id=5, created_at_ms=NOW_MS - 3),
        2: Post(post_id=2, author_id=5, created_at_ms=NOW_MS - 2, in_reply_to_post_id=1, conversation_id=1),
        3: Post(post_id=3, author_id=6, created_at_ms=NOW_MS - 1, in_reply_to_post_id=2, conversation_id=1),
        4: Post(post_id=4, author_id=7, created_at_ms=NOW_MS),  # not followed
    }
    thunder = InMemoryThunder(posts)
    q = query(user_features=UserFeatures(followed_user_ids=frozenset({5, 6})))
    found = asyncio.run(ThunderSource(thunder, max_results=10).get_candidates(q))
    assert [(c.post_id, c.ancestors) for c in found] == [(3, (2, 1)), (2, (1,)), (1, ())]
    assert all(c.served_type is ServedType.IN_NETWORK for c in found)
    assert thunder.requests[0].followed_ids == (5, 6) and thunder.requests[0].max_results == 10


def test_thunder_source_without_features_is_an_error_without_follows_is_empty():
    source = ThunderSource(InMemoryThunder(), 10)
    with pytest.raises(RuntimeError, match="user features"):
        asyncio.run(source.get_candidates(query()))
    assert asyncio.run(source.get_candidates(query(user_features=UserFeatures()))) == []


def test_phoenix_source_needs_history_and_is_off_for_in_network_only():
    retrieval = InMemoryRetrieval({1: [RetrievedPost(9, 3, 0.7, in_reply_to_post_id=8)]})
    source = PhoenixSource(retrieval, max_results=5)
    [c] = asyncio.run(source.get_candidates(query(history=(item(1),))))
    assert (c.post_id, c.author_id, c.served_type, c.retrieval_score, c.in_reply_to_post_id) == (
        9, 3, ServedType.RETRIEVAL, 0.7, 8,
    )
    assert retrieval.requests[0].max_results == 5 and retrieval.requests[0].now_ms == NOW_MS
    assert not source.enable(query(in_network_only=True))
    with pytest.raises(RuntimeError, match="no engagement history"):
        asyncio.run(source.get_candidates(query(history=())))


# ---------------------------------------------------------------- candidate hydrators


def test_in_network_is_by_follow_list_or_self():
    q = query(viewer_id=1, user_features=UserFeatures(followed_user_ids=frozenset({5})))
    cands = hydrate(InNetworkHydrator(), [cand(1, author_id=1), cand(2, author_id=5), cand(3, author_id=6)], q)
    assert [c.in_network for c in cands] == [True, True, False]


POSTS = {
    1: Post(post_id=1, author_id=5, created_at_ms=NOW_MS - 9, text="hi", in_reply_to_post_id=7,
            media=(Media(MediaKind.PHOTO), Media(MediaKind.VIDEO, 12_000))),
    2: Post(post_id=2, author_id=6, created_at_ms=NOW_MS - 8, repost_of_post_id=1, repost_of_user_id=5,
            subscription_only=True),
}


def test_core_data_copies_links_repost_text_and_leaves_missing_posts_unhydrated():
    cands = hydrate(CoreDataHydrator(InMemoryPostData(POSTS)), [cand(1, text=None), cand(2, text=None), cand(3, text=None)])
    assert (cands[0].text, cands[0].in_reply_to_post_id, cands[0].created_at_ms) == ("hi", 7, NOW_MS - 9)
    # a plain repost takes its original's text (so muted keywords apply to it)
    assert (cands[1].repost_of_post_id, cands[1].repost_of_user_id, cands[1].text) == (1, 5, "hi")
    assert cands[2].text is None


def test_video_duration_and_subscription():
    data = InMemoryPostData(POSTS)
    cands = hydrate(VideoDurationHydrator(data), [cand(1), cand(2)])
    assert [c.video_duration_ms for c in cands] == [12_000, None]
    cands = hydrate(SubscriptionHydrator(data), cands)
    assert [c.subscription_author_id for c in cands] == [None, 6]


def test_author_info_includes_the_reposted_user_even_without_core_data():
    data = InMemoryPostData(POSTS, {5: UserProfile(5, "five", 50), 6: UserProfile(6, "six", 60)})
    cands = hydrate(AuthorInfoHydrator(data), [cand(1, author_id=5), cand(2, author_id=6), cand(3, author_id=99)])
    assert [(c.author_screen_name, c.author_followers_count, c.repost_screen_name) for c in cands] == [
        ("five", 50, None), ("six", 60, "five"), (None, None, None),
    ]


def test_the_post_hydrators_of_one_request_share_one_fetch_per_post():
    data = InMemoryPostData(POSTS, {5: UserProfile(5, "five", 50), 6: UserProfile(6, "six", 60)})
    q = query()  # one request: its post cache is q.post_cache
    hydrators = [CoreDataHydrator(data), VideoDurationHydrator(data), SubscriptionHydrator(data), AuthorInfoHydrator(data)]
    for hydrator in hydrators:
        hydrate(hydrator, [cand(1), cand(2)], q)
    assert data.calls == 1  # posts 1 and 2 fetched once; the repost's original (1) was among them
    hydrate(CoreDataHydrator(data), [cand(1), cand(2)])  # another request fetches again
    assert data.calls == 2


# ---------------------------------------------------------------- side effect


def test_served_history_records_ids_and_skips_in_network_only():
    store = InMemoryUserData()
    effect = ServedHistorySideEffect(store)
    report = asyncio.run(effect.launch(query(), [cand(3), cand(4)]))
    assert report.status is Status.OK and store.served == [(1, [3, 4], NOW_MS)]
    report = asyncio.run(effect.launch(query(in_network_only=True), [cand(5)]))
    assert report.status is Status.DISABLED and len(store.served) == 1
