"""One test (or a few) per pre-scoring filter, with its edge cases."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from tests.mixer.fakes import MINUTE_MS, NOW_MS, cand, query
from xserve.mixer.bloom import BloomFilterBuilder
from xserve.mixer.filters import (
    AgeFilter,
    AuthorSocialgraphFilter,
    CoreDataHydrationFilter,
    DropDuplicatesFilter,
    IneligibleSubscriptionFilter,
    MutedKeywordFilter,
    PreviouslySeenFilter,
    PreviouslyServedFilter,
    RepostDeduplicationFilter,
    SelfPostFilter,
)
from xserve.pipeline import Status
from xserve.schema import ServedType, UserFeatures


def run(flt, candidates, q=None):
    """(kept ids, removed ids, status) through the framework's run()."""
    result, report = asyncio.run(flt.run(q or query(), candidates))
    return [c.post_id for c in result.kept], [c.post_id for c in result.removed], report.status


def test_drop_duplicates_keeps_the_first_occurrence():
    first = cand(1, served_type=ServedType.RETRIEVAL)
    kept, removed, _ = run(DropDuplicatesFilter(), [first, cand(2), cand(1), cand(1)])
    assert (kept, removed) == ([1, 2], [1, 1])


def test_core_data_hydration_drops_unhydrated_keeps_media_only():
    kept, removed, _ = run(CoreDataHydrationFilter(), [cand(1, text=None), cand(2, text=""), cand(3, author_id=0)])
    assert (kept, removed) == ([2], [1, 3])


def test_age_filter_boundary_and_unknown_age():
    max_age = 48 * 60 * MINUTE_MS
    cands = [
        cand(1, created_at_ms=NOW_MS - max_age),  # exactly the max age: kept
        cand(2, created_at_ms=NOW_MS - max_age - 1),
        cand(3, created_at_ms=None),
        cand(4, created_at_ms=NOW_MS + MINUTE_MS),  # clock skew: kept
    ]
    assert run(AgeFilter(max_age), cands)[:2] == ([1, 4], [2, 3])
    assert repr(AgeFilter(max_age)) == "AgeFilter(max_age_ms=172800000)"


def test_self_post_filter():
    assert run(SelfPostFilter(), [cand(1, author_id=1), cand(2, author_id=5)], query(viewer_id=1))[:2] == ([2], [1])


def test_repost_dedup_hides_second_repost_and_repost_after_original():
    cands = [
        cand(10),  # original
        cand(11, repost_of_post_id=10),  # repost of an original already in the list
        cand(12, repost_of_post_id=20),
        cand(13, repost_of_post_id=20),  # second repost of the same original
    ]
    assert run(RepostDeduplicationFilter(), cands)[:2] == ([10, 12], [11, 13])


def test_repost_dedup_keeps_an_original_after_its_repost():
    cands = [cand(11, repost_of_post_id=10), cand(10)]
    assert run(RepostDeduplicationFilter(), cands)[:2] == ([11, 10], [])


def test_ineligible_subscription():
    q = query(user_features=UserFeatures(subscribed_user_ids=frozenset({7})))
    cands = [cand(1, subscription_author_id=7), cand(2, subscription_author_id=8), cand(3)]
    assert run(IneligibleSubscriptionFilter(), cands, q)[:2] == ([1, 3], [2])


def test_previously_seen_uses_related_ids_and_bloom_filters():
    bloom = BloomFilterBuilder(expected_items=10)
    bloom.add(50)
    q = query(seen_ids=frozenset({10}), bloom_filters=(bloom.build(),))
    cands = [
        cand(10),  # seen itself
        cand(11, repost_of_post_id=10),  # a repost of a seen post is hidden
        cand(12, in_reply_to_post_id=10),  # so is a reply to it
        cand(13, repost_of_post_id=50),  # original impressed (Bloom filter)
        cand(14),
    ]
    assert run(PreviouslySeenFilter(), cands, q)[:2] == ([14], [10, 11, 12, 13])


def test_previously_served_only_on_bottom_requests():
    cands = [cand(1), cand(2, repost_of_post_id=1), cand(3)]
    top = query(served_ids=frozenset({1}))
    assert run(PreviouslyServedFilter(), cands, top) == ([1, 2, 3], [], Status.DISABLED)
    bottom = query(served_ids=frozenset({1}), is_bottom_request=True)
    assert run(PreviouslyServedFilter(), cands, bottom) == ([3], [1, 2], Status.OK)


def muted(*keywords: str):
    return query(user_features=UserFeatures(muted_keywords=keywords))


def test_muted_keyword_token_sequence():
    cands = [
        cand(1, text="Reading the new york times"),
        cand(2, text="newyork is one word"),
        cand(3, text="New\nYork!"),
        cand(4, text="new and york apart"),
    ]
    assert run(MutedKeywordFilter(), cands, muted("New York"))[:2] == ([2, 4], [1, 3])


def test_muted_keyword_unicode_case_and_width():
    cands = [cand(1, text="ＳＴＲＡSSE closed"), cand(2, text="CAFÉ open"), cand(3, text="cafe open"), cand(4, text="Straßenbahn")]
    assert run(MutedKeywordFilter(), cands, muted("straße", "Café"))[:2] == ([3, 4], [1, 2])


def test_muted_keyword_inside_unspaced_text_emoji_and_hashtags():
    cands = [
        cand(1, text="我爱北京天安门"),
        cand(2, text="今日はワールドカップを見た"),
        cand(3, text="ฉันชอบกินข้าวผัดมาก"),
        cand(4, text="pizza🍕night"),
        cand(5, text="category theory"),
        cand(6, text="#Spoilers ahead"),
    ]
    keywords = muted("北京", "ワールドカップ", "ข้าวผัด", "🍕", "cat", "#spoilers")
    assert run(MutedKeywordFilter(), cands, keywords)[:2] == ([5], [1, 2, 3, 4, 6])


def test_muted_keyword_is_a_noop_without_keywords():
    assert run(MutedKeywordFilter(), [cand(1, text="anything")], muted()) == ([1], [], Status.DISABLED)


def test_author_socialgraph_blocked_muted_and_reposted_user():
    q = query(user_features=UserFeatures(blocked_user_ids=frozenset({20}), muted_user_ids=frozenset({21})))
    cands = [cand(1, author_id=20), cand(2, author_id=21), cand(3, repost_of_post_id=9, repost_of_user_id=20), cand(4)]
    assert run(AuthorSocialgraphFilter(), cands, q)[:2] == ([4], [1, 2, 3])


ALL_FILTERS = [
    DropDuplicatesFilter(), CoreDataHydrationFilter(), AgeFilter(60 * MINUTE_MS), SelfPostFilter(),
    RepostDeduplicationFilter(), IneligibleSubscriptionFilter(), PreviouslySeenFilter(), PreviouslyServedFilter(),
    MutedKeywordFilter(), AuthorSocialgraphFilter(),
]
small = st.integers(1, 6)
candidates = st.lists(
    st.builds(
        cand,
        post_id=small,
        author_id=small,
        repost_of_post_id=st.none() | small,
        repost_of_user_id=st.none() | small,
        in_reply_to_post_id=st.none() | small,
        subscription_author_id=st.none() | small,
        text=st.none() | st.sampled_from(["", "a b", "b c"]),
        created_at_ms=st.none() | st.integers(NOW_MS - 120 * MINUTE_MS, NOW_MS),
    ),
    max_size=12,
)
features = st.builds(
    UserFeatures,
    followed_user_ids=st.frozensets(small),
    blocked_user_ids=st.frozensets(small),
    muted_user_ids=st.frozensets(small),
    muted_keywords=st.lists(st.sampled_from(["a", "b c", "z"]), max_size=2).map(tuple),
    subscribed_user_ids=st.frozensets(small),
)


@given(candidates, features, st.frozensets(small), st.booleans())
def test_every_filter_splits_its_input_into_two_ordered_parts(cands, feats, ids, bottom):
    q = query(user_features=feats, seen_ids=ids, served_ids=ids, is_bottom_request=bottom)
    for flt in ALL_FILTERS:
        result = flt.filter(q, list(cands))
        kept_pos = [next(i for i, c in enumerate(cands) if c is k) for k in result.kept]
        removed_pos = [next(i for i, c in enumerate(cands) if c is r) for r in result.removed]
        assert kept_pos == sorted(kept_pos) and removed_pos == sorted(removed_pos), flt
        assert sorted(kept_pos + removed_pos) == list(range(len(cands))), flt
