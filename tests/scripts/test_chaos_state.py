"""scripts/chaoslib/state.py: how a chaos run compares a part's state after a fault with the baseline."""

from __future__ import annotations

import msgspec

from scripts.chaoslib.state import (
    Ages,
    compare_feeds,
    created_ms,
    same_catalog,
    same_posts,
    same_scores,
    same_users,
    writes_in_thunder,
)
from tests.phoenix.rank_factories import make_request, make_runner, tiny_model
from xserve.schema import Post, RankResponse
from xserve.storage import DataDir, posts_to_table


def feed(*ids: int) -> list[tuple[int, float]]:
    """A feed of ``ids``, each with its own score (no ties)."""
    return [(p, 1 / (1 + p)) for p in ids]


def test_equal_feeds_match_and_a_lost_or_moved_post_does_not():
    assert compare_feeds(feed(1, 2, 3), feed(1, 2, 3)) is None
    assert "position 1" in compare_feeds(feed(1, 2, 3), feed(1, 3, 4))
    assert "position 0" in compare_feeds(feed(1, 2, 3), feed(2, 1, 3))
    assert "missing" in compare_feeds(feed(1, 2, 3), feed(1, 2))


def test_new_posts_are_left_out_and_may_push_the_tail_out():
    # post 9 was created after the baseline and ranks second: the baseline's last post falls off the page
    assert compare_feeds(feed(1, 2, 3), feed(1, 9, 2), new={9}) is None
    # ...but a new post explains one lost post, not two
    assert compare_feeds(feed(1, 2, 3), feed(1, 9), new={9}) is not None


def test_aged_posts_are_left_out_on_both_sides():
    assert compare_feeds(feed(1, 2, 3), feed(1, 3, 4), aged={2}) is None


def test_near_ties_may_trade_places_but_not_distinct_scores():
    before = [(1, 0.5), (2, 0.40000001), (3, 0.4)]
    assert compare_feeds(before, [(1, 0.5), (3, 0.4), (2, 0.40000001)]) is None
    assert compare_feeds(before, [(1, 0.5), (3, 0.4), (2, 0.40000001)], rel_tol=0.0) is not None


def test_a_near_tie_may_reorder_posts_but_never_replace_one():
    before = [(1, 0.5), (2, 0.40000001), (3, 0.4), (4, 0.3)]
    # post 2 is gone and post 9, scored like it, took its slot: a replacement, whatever the scores
    assert "replaced" in compare_feeds(before, [(1, 0.5), (9, 0.40000002), (3, 0.4), (4, 0.3)])
    # a post that was not in the baseline may enter only from just below the page, tied with its last post...
    assert compare_feeds(before, [(1, 0.5), (2, 0.40000001), (3, 0.4), (9, 0.30000001)]) is None
    # ...and then the post it pushed off the page must be tied with it too
    assert compare_feeds(before, [(1, 0.5), (2, 0.40000001), (4, 0.3), (9, 0.30000001)]) is not None


def test_a_page_that_was_not_full_had_nothing_below_it():
    before = [(1, 0.5), (2, 0.4), (3, 0.3)]
    assert compare_feeds(before, [(1, 0.5), (2, 0.4), (3, 0.3), (9, 0.1)], limit=4) is not None  # 9 is no new post
    assert compare_feeds(before, [(1, 0.5), (2, 0.4), (3, 0.3), (9, 0.1)], limit=3) is None  # it was just below
    assert "not full" in compare_feeds(before, [(1, 0.5), (2, 0.4)], limit=3)  # ...and 3 had no reason to leave


def test_an_author_s_tied_posts_trade_diversity_ranks_and_move_past_other_posts():
    # author A's posts 1 and 2 tie (weighted 1.0); the decay gives the better one 1.0 and the other 0.625.
    # Post 5 (weighted 0.7) sits between them. The tie breaks the other way after: 1 and 2 swap multipliers.
    before = [(1, 1.0, 1.0, 1.0, 1), (5, 0.7, 0.7, 1.0, 5), (2, 0.625, 1.0, 0.625, 2)]
    after = [(2, 1.0, 1.0, 1.0, 2), (5, 0.7, 0.7, 1.0, 5), (1, 0.625, 1.0, 0.625, 1)]
    assert compare_feeds(before, after) is None
    # the same move without the multipliers changing has no explanation
    assert "order" in compare_feeds([(1, 1.0, 1.0, 1.0, 1), (5, 0.7, 0.7, 1.0, 5)],
                                    [(5, 0.7, 0.7, 1.0, 5), (1, 1.0, 1.0, 1.0, 1)])


def test_a_post_may_take_the_place_of_a_tied_post_of_its_own_conversation():
    # the feed keeps the better scored post of each conversation: 3 (a reply in conversation 2) and 2 tie
    before = [(1, 0.5, 0.5, 1.0, 1), (2, 0.4, 0.4, 1.0, 2)]
    assert compare_feeds(before, [(1, 0.5, 0.5, 1.0, 1), (3, 0.4, 0.4, 1.0, 2)], limit=5) is None
    # ...but not of another conversation, nor without a tie
    assert "not from the baseline page" in compare_feeds(before, [(1, 0.5, 0.5, 1.0, 1), (3, 0.4, 0.4, 1.0, 3)], limit=5)
    assert "not from the baseline page" in compare_feeds(before, [(1, 0.5, 0.5, 1.0, 1), (3, 0.3, 0.3, 1.0, 2)], limit=5)


def test_posts_may_trade_places_only_with_those_they_are_tied_with():
    before = [(1, 0.5), (2, 0.40000001), (3, 0.4), (4, 0.3)]
    assert compare_feeds(before, [(1, 0.5), (3, 0.4), (2, 0.40000001), (4, 0.3)]) is None
    # 4 moved above 2, with which it is not tied
    assert "order" in compare_feeds(before, [(1, 0.5), (3, 0.4), (4, 0.3), (2, 0.40000001)])


def test_a_baseline_post_may_drop_off_the_page_only_below_every_post_still_on_it():
    before = [(1, 0.5), (2, 0.4), (3, 0.3)]
    # new post 9 ranks first: post 3, the lowest, falls off
    assert compare_feeds(before, [(9, 0.6), (1, 0.5), (2, 0.4)], new={9}) is None
    # the new post explains one lost post, but not post 1, which outranks the posts that stayed
    assert "missing" in compare_feeds(before, [(9, 0.6), (2, 0.4), (3, 0.3)], new={9})


def test_same_posts_leaves_out_posts_older_than_the_cutoff_on_both_sides():
    before = [(1, 100), (2, 200), (3, 300)]
    assert same_posts(before, before, cutoff_ms=0) is None
    # post 1 aged out of the part's answer since the baseline
    assert same_posts(before, [(2, 200), (3, 300)], cutoff_ms=150) is None
    assert same_posts(before, [(2, 200), (3, 300)], cutoff_ms=0) == "1 posts missing, 0 extra"


def test_same_posts_counts_missing_and_extra_and_cares_about_order():
    before = [(1, 100), (2, 200)]
    assert same_posts(before, [(2, 200), (7, 700), (8, 800)], cutoff_ms=0) == "1 posts missing, 2 extra"
    assert same_posts(before, [(2, 200), (1, 100)], cutoff_ms=0) == "0 posts missing, 0 extra"


def test_same_users_names_the_first_user_whose_features_or_history_differ():
    before = {5: ("features5", ("h1",)), 6: ("features6", ("h2",))}
    assert same_users(before, dict(before), cutoff_ms=0) is None
    assert same_users(before, {**before, 6: ("features6", ("h2", "h3"))}, cutoff_ms=0) == "features or history of user 6"
    assert same_users(before, {6: before[6]}, cutoff_ms=0) == "features or history of user 5"


def test_created_ms_reads_the_time_out_of_an_api_post_id():
    ms = 1_700_000_123_456
    assert created_ms((ms << 20) | 0xFFFFF) == ms
    assert created_ms(ms << 20) == ms


def test_ages_take_the_posts_table_and_else_the_post_id(tmp_path):
    data = DataDir(tmp_path / "data")
    data.write_posts(posts_to_table([Post(post_id=1, author_id=9, created_at_ms=1_000, text="old"),
                                     Post(post_id=2, author_id=9, created_at_ms=5_000, text="new")]))
    new_post = 3_000 << 20  # created by the API after the table was read: its time is in its id
    ages = Ages(tmp_path / "data")
    assert ages.aged([1, 2, new_post], cutoff_ms=2_000) == {1}
    assert ages.aged([1, 2, new_post], cutoff_ms=4_000) == {1, new_post}


def test_same_scores_holds_for_one_ranker_and_fails_for_another():
    requests = [make_request(user=1, n_history=12, n_candidates=8), make_request(user=2, n_candidates=5, seed=1)]
    ranker = make_runner(tiny_model(seed=0))
    batched = ranker.rank(requests)
    alone = [ranker.rank([r])[0] for r in requests]  # another batch, and the contexts now from the KV cache
    assert same_scores(batched, alone) is None
    # other weights (a replica that loaded another checkpoint, or none): every score moves
    assert same_scores(batched, make_runner(tiny_model(seed=1)).rank(requests)).startswith("request 0, candidate 0: ")
    # the same order with every score 1 % higher: a feed's order could not tell, the scores do
    scaled = [RankResponse(tuple(msgspec.structs.replace(s, favorite=s.favorite * 1.01) for s in r.scores),
                           r.model_version) for r in batched]
    assert "favorite" in same_scores(batched, scaled)
    assert "model version" in same_scores(batched, [RankResponse(r.scores, "other") for r in batched])
    assert same_scores(batched, batched[:1]) == "1 answers, not 2"


def test_same_catalog_leaves_out_posts_older_than_the_cutoff():
    old, young = Post(post_id=1, author_id=9, created_at_ms=100), Post(post_id=2, author_id=9, created_at_ms=300)
    assert same_catalog({1: old, 2: young}, {2: young}, cutoff_ms=200) is None
    assert same_catalog({1: old, 2: young}, {1: old}, cutoff_ms=200).startswith("post 2: missing")
    relabelled = msgspec.structs.replace(young, text="edited")
    assert same_catalog({2: young}, {2: relabelled}, cutoff_ms=0).startswith("post 2: Post(")


def test_writes_in_thunder_wants_every_live_post_and_no_deleted_one():
    assert writes_in_thunder({1, 2}, live={1, 2}, deleted={3}) is None
    assert writes_in_thunder({1, 3}, live={1, 2}, deleted={3}) == (
        "1 acknowledged posts missing from Thunder (first [2]), 1 deleted ones still there (first [3])")
