"""scripts/chaoslib/state.py: how a chaos run compares a part's state after a fault with the baseline."""

from __future__ import annotations

from xserve.schema import Post
from xserve.storage import DataDir, posts_to_table

from scripts.chaoslib.state import Ages, compare_feeds, created_ms, same_posts, same_users


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
