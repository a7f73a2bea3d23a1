from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from xserve.schema import Action, Engagement
from xserve.users.history import EngagementSequence

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


@settings(max_examples=60, deadline=None)
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
