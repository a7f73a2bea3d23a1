from __future__ import annotations

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xserve.schema import ACTION_INDEX, Action, Engagement, ProductSurface
from xserve.users.history import EngagementSequence, aggregate_actions, window_start

W = 300_000


def eng(post: int, t: int, action: Action = Action.FAVORITE, dwell: int = 0, user: int = 1) -> Engagement:
    return Engagement(user_id=user, post_id=post, author_id=100 + post, action=action, timestamp_ms=t, dwell_ms=dwell)


def test_actions_on_one_post_in_one_window_merge_into_one_item():
    seq = EngagementSequence(capacity=10, window_ms=W)
    seq.add(eng(1, 1_000, Action.CLICK))
    seq.add(eng(1, 2_000, Action.FAVORITE))
    seq.add(eng(1, 3_000, Action.DWELL, dwell=5_000))
    (item,) = seq.latest(10)
    assert item.post_id == 1 and item.author_id == 101
    assert item.actions == {Action.CLICK, Action.FAVORITE, Action.DWELL}
    assert item.timestamp_ms == 3_000 and item.dwell_ms == 5_000


def test_other_windows_and_posts_are_separate_newest_last():
    seq = EngagementSequence(capacity=10, window_ms=W)
    seq.add(eng(1, 1_000))
    seq.add(eng(2, 2_000))
    seq.add(eng(1, 1_000 + W))  # next window
    assert [(i.post_id, i.timestamp_ms) for i in seq.latest(10)] == [(1, 1_000), (2, 2_000), (1, 1_000 + W)]
    assert [i.post_id for i in seq.latest(2)] == [2, 1]


def test_a_later_action_moves_its_item_to_the_newest_end():
    seq = EngagementSequence(capacity=10, window_ms=W)
    seq.add(eng(1, 1_000))
    seq.add(eng(2, 2_000))
    seq.add(eng(1, 3_000, Action.REPLY))
    assert [i.post_id for i in seq.latest(10)] == [2, 1]


def test_capacity_keeps_the_newest_and_drops_late_data():
    seq = EngagementSequence(capacity=3, window_ms=W)
    for k in range(5):
        seq.add(eng(k + 1, k * W))
    assert [i.post_id for i in seq.latest(10)] == [3, 4, 5]
    assert not seq.add(eng(1, 0))  # re-applying an evicted engagement changes nothing
    assert len(seq) == 3


engagements = st.lists(
    st.builds(
        eng,
        post=st.integers(1, 6),
        t=st.integers(0, 4 * W),
        action=st.sampled_from(list(Action)),
        dwell=st.integers(0, 10_000),
    ),
    max_size=40,
)


@settings(max_examples=60)
@given(engagements, st.randoms())
def test_order_of_arrival_and_duplicates_do_not_matter(events, rnd):
    """Idempotent and order-free: any permutation with repeats gives the same sequence (no eviction)."""
    a = EngagementSequence(capacity=1_000, window_ms=W)
    for e in events:
        a.add(e)
    shuffled = events + events
    rnd.shuffle(shuffled)
    b = EngagementSequence(capacity=1_000, window_ms=W)
    for e in shuffled:
        b.add(e)
    assert a.latest(1_000) == b.latest(1_000)
    # every item aggregates exactly the engagements of its (post, window)
    for item in a.latest(1_000):
        group = [e for e in events if e.post_id == item.post_id and e.timestamp_ms // W == item.timestamp_ms // W]
        assert item.actions == {e.action for e in group}
        assert item.timestamp_ms == max(e.timestamp_ms for e in group)
    times = [i.timestamp_ms for i in a.latest(1_000)]
    assert times == sorted(times)


def test_the_first_action_gives_the_surface_and_a_tie_takes_the_smaller_value():
    seq = EngagementSequence(capacity=10, window_ms=W)
    seq.add(Engagement(1, 1, 101, Action.FAVORITE, 2_000, product_surface=ProductSurface.PROFILE))
    seq.add(Engagement(1, 1, 101, Action.REPLY, 3_000, product_surface=ProductSurface.CONVERSATION))
    assert seq.latest(1)[0].product_surface == ProductSurface.PROFILE  # a later action changes nothing
    seq.add(Engagement(1, 1, 101, Action.CLICK, 1_000, product_surface=ProductSurface.EXPLORE))
    assert seq.latest(1)[0].product_surface == ProductSurface.EXPLORE  # an earlier one, arriving late, does
    seq.add(Engagement(1, 1, 101, Action.DWELL, 1_000, product_surface=ProductSurface.HOME_FOLLOWING))
    assert seq.latest(1)[0].product_surface == ProductSurface.HOME_FOLLOWING  # same time: the smaller value
    assert seq.latest(1)[0].timestamp_ms == 3_000


def _columns(events: list[Engagement]) -> list[np.ndarray]:
    return [np.array([getattr(e, name) for e in events], np.int64) for name in
            ("user_id", "post_id", "author_id")] + [
        np.array([ACTION_INDEX[e.action] for e in events], np.int64),
        np.array([e.timestamp_ms for e in events], np.int64),
        np.array([int(e.product_surface) for e in events], np.int64),
        np.array([e.dwell_ms for e in events], np.int64)]


surfaced = st.lists(
    st.builds(
        eng,
        post=st.integers(1, 6),
        t=st.integers(0, 4 * W),
        action=st.sampled_from(list(Action)),
        dwell=st.integers(0, 10_000),
        user=st.integers(1, 3),
    ).flatmap(lambda e: st.sampled_from(list(ProductSurface)).map(
        lambda s: msgspec.structs.replace(e, product_surface=s))),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60)
@given(surfaced, st.randoms())
def test_the_vectorised_aggregation_equals_the_sequence_in_any_order(events, rnd):
    """The two implementations of the one rule: a whole log at once (training, table loads) equals folding its
    actions one by one in any order (serving)."""
    whole = aggregate_actions(*_columns(events), W)
    shuffled = list(events)
    rnd.shuffle(shuffled)
    for k, user in enumerate(whole.user[whole.starts].tolist()):
        seq = EngagementSequence(capacity=1_000, window_ms=W)
        for e in shuffled:
            if e.user_id == user:
                seq.add(e)
        assert tuple(whole.items(range(whole.starts[k], whole.ends[k]))) == seq.latest(1_000)
    assert sorted(set(whole.user.tolist())) == sorted({e.user_id for e in events})


def test_the_window_grows_to_history_len_then_drops_a_whole_block():
    assert [int(window_start(n, 8, 3)) for n in range(14)] == [0] * 9 + [3, 3, 3, 6, 6]
    lengths = [n - int(window_start(n, 8, 3)) for n in range(30)]
    assert max(lengths) == 8 and min(lengths[8:]) == 6  # 8 - 3 + 1 .. 8 once full
    n = np.arange(100)  # the vectorised form (training) agrees with the scalar one (serving)
    assert window_start(n, 8, 3).tolist() == [int(window_start(int(k), 8, 3)) for k in n]
    assert window_start(n, 8, 1).tolist() == np.maximum(n - 8, 0).tolist()  # block 1: the sliding window
    assert window_start(n, 8, 50).tolist() == window_start(n, 8, 8).tolist()  # a block is at most the window
    with pytest.raises(ValueError, match="trim_block and history_len must be >= 1"):
        window_start(5, 8, 0)


def test_the_sequence_window_counts_evicted_and_load_dropped_entries():
    seq = EngagementSequence(capacity=10, window_ms=W)
    for t in range(1, 15):
        seq.add(eng(t, t * W))
    assert seq.num_entries == 14 and len(seq) == 10  # 4 evicted, still counted
    assert [i.post_id for i in seq.window(8, 3)] == [7, 8, 9, 10, 11, 12, 13, 14]  # window_start(14, 8, 3) = 6
    assert seq.window(8, 1) == seq.latest(8)
    seq.add(eng(15, 15 * W))
    assert [i.post_id for i in seq.window(8, 3)] == [10, 11, 12, 13, 14, 15]  # the next block dropped at once
    loaded = EngagementSequence(capacity=10, window_ms=W)
    loaded.note_dropped(5, 5 * W)  # a table load kept the newest 10 of 15
    for t in range(6, 16):
        loaded.add(eng(t, t * W))
    assert loaded.num_entries == 15 and loaded.window(8, 3) == seq.window(8, 3)
    assert not loaded.add(eng(99, 5 * W))  # as late as the dropped ones: dropped too
