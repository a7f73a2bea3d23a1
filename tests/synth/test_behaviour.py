"""The simulator's reader: attention decay, action and dwell draws from the ground truth, the tally's figures."""

from __future__ import annotations

import numpy as np
import pytest

from tests.synth.test_oracle import DAY, hand_made
from xserve.schema import ACTION_INDEX, ACTIONS, NEGATIVE_ACTIONS, Action
from xserve.synth.behaviour import BehaviourConfig, BehaviourModel, PageReading, SessionTally
from xserve.synth.oracle import TrueActionModel
from xserve.synth.world import action_weights

NEG = [ACTION_INDEX[a] for a in NEGATIVE_ACTIONS]


def test_attention_decays_geometrically_with_position():
    """Position i of a page is viewed with p = decay**i; a reader reaches the page's end (and reads on) with decay**n."""
    model = BehaviourModel(TrueActionModel(hand_made(action_weights())), BehaviourConfig(attention_decay=0.7))
    rng = np.random.default_rng(0)
    page = np.array([10, 11, 12, 10, 11])
    readings = [model.read(rng, 1, page, DAY) for _ in range(4_000)]
    viewed = np.array([len(r.viewed) for r in readings])
    for i in range(len(page)):
        assert np.mean(viewed > i) == pytest.approx(0.7**i, abs=0.03), i
    assert np.mean([r.read_on for r in readings]) == pytest.approx(0.7 ** len(page), abs=0.03)
    assert all(r.read_on == (len(r.viewed) == len(page)) or not r.read_on for r in readings)
    assert all((r.viewed == page[: len(r.viewed)]).all() for r in readings)  # top down, in served order


def test_actions_follow_the_truth_and_a_negative_drops_the_positives():
    truth = TrueActionModel(hand_made(action_weights()))
    model = BehaviourModel(truth, BehaviourConfig(attention_decay=1.0))
    rng = np.random.default_rng(1)
    n = 20_000
    reading = model.read(rng, 2, np.full(n, 11), 0)  # user 2 on a labelled quote: negatives are likely
    assert len(reading.viewed) == n and reading.read_on
    sigma, _ = truth.independent(np.array([2]), np.array([11]), np.array([0]))
    for a in NEGATIVE_ACTIONS:  # negatives are drawn independently at their σ
        assert reading.actions[:, ACTION_INDEX[a]].mean() == pytest.approx(sigma[0, ACTION_INDEX[a]], abs=0.01)
    # a positive is drawn at its σ and kept only without a negative: the oracle's probability
    want = truth(np.array([2]), np.array([11]), np.array([0]))[0]
    for a in (Action.DWELL, Action.CLICK, Action.QUOTED_CLICK):
        assert reading.actions[:, ACTION_INDEX[a]].mean() == pytest.approx(want[ACTION_INDEX[a]], abs=0.01)
    negative = reading.negative
    assert negative.any() and not reading.actions[negative][:, [i for i in range(len(ACTIONS)) if i not in NEG]].any()
    assert not reading.actions[:, ACTION_INDEX[Action.PHOTO_EXPAND]].any()  # gated: not a photo
    dwelled = reading.actions[:, ACTION_INDEX[Action.DWELL]]
    assert (reading.dwell_ms[dwelled] >= 300).all() and (reading.dwell_ms[~dwelled] == 0).all()
    unknown = model.read(rng, 2, np.array([99, 98]), 0)  # posts the world does not hold draw nothing
    assert not unknown.actions.any()



def test_the_expected_figures_are_the_means_of_the_drawn_ones():
    """A reading's expected negative and unregretted milliseconds per post are what the draws average to."""
    model = BehaviourModel(TrueActionModel(hand_made(action_weights())), BehaviourConfig(attention_decay=1.0))
    rng = np.random.default_rng(2)
    reading = model.read(rng, 2, np.full(40_000, 11), 0)  # negatives are likely on this post (the test above)
    negative = reading.negative
    assert reading.expected_negative[0] == pytest.approx(negative.mean(), abs=0.01)
    drawn = np.where(negative, -30_000.0, reading.dwell_ms)  # per post: its dwell, or the regret of a negative
    assert reading.expected_unregretted_ms[0] == pytest.approx(drawn.mean(), rel=0.05)
    tally = SessionTally(regret_s=30.0)
    for half in (slice(0, 20_000), slice(20_000, None)):  # two sessions
        tally.start_session()
        tally.add(PageReading(reading.viewed[half], reading.actions[half], reading.dwell_ms[half], False,
                              reading.expected_negative[half], reading.expected_unregretted_ms[half]))
    got = {name: value for name, (value, _) in tally.figures().items()}
    assert got["expected_negative_rate"] == pytest.approx(got["negative_rate"], abs=0.01)
    assert got["expected_unregretted_s_per_session"] == pytest.approx(got["unregretted_s_per_session"], rel=0.05)
    assert got["expected_negative_rate_se"] == pytest.approx(0.0, abs=1e-9)  # the same post in both sessions
    assert 0 < got["negative_rate_se"] < 0.01

def test_a_post_made_known_after_seeding_is_read_like_a_seeded_one():
    truth = TrueActionModel(hand_made(action_weights()))
    truth.add_posts(np.array([20]), np.array([2]), np.array([0]), np.array([DAY]))  # like post 10: user 2, topic 0
    a, b = truth(np.array([1, 1]), np.array([10, 20]), np.array([DAY, DAY]))
    photo = ACTION_INDEX[Action.PHOTO_EXPAND]
    assert b[photo] == 0 and a[photo] > 0  # a new post is plain text
    assert b[ACTION_INDEX[Action.FAVORITE]] > 0
    with pytest.raises(ValueError, match="above every known post id"):
        truth.add_posts(np.array([15]), np.array([1]), np.array([0]), np.array([DAY]))


def test_the_tally_counts_unregretted_seconds_net_of_regret():
    actions = np.zeros((3, len(ACTIONS)), dtype=bool)
    actions[0, ACTION_INDEX[Action.DWELL]] = actions[0, ACTION_INDEX[Action.FAVORITE]] = True
    actions[1, ACTION_INDEX[Action.DWELL]] = True
    actions[2, ACTION_INDEX[Action.REPORT]] = True
    reading = PageReading(np.array([1, 2, 3]), actions, np.array([4_000, 6_000, 0]), read_on=False)
    tally = SessionTally(regret_s=30.0, sessions=2)
    tally.add(reading)
    got = {name: value for name, (value, _) in tally.figures().items()}
    assert got["engagement_rate"] == pytest.approx(1 / 3)  # dwelling alone is not an engagement
    assert got["negative_rate"] == pytest.approx(1 / 3)
    assert got["dwell_s_per_session"] == pytest.approx(5.0)
    assert got["unregretted_s_per_session"] == pytest.approx((10.0 - 30.0) / 2)


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="attention_decay"):
        BehaviourConfig(attention_decay=0.0)
    with pytest.raises(ValueError, match="regret_s"):
        BehaviourConfig(regret_s=-1.0)
