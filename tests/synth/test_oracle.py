"""The oracle: the world's own action model, scoring any (user, post, time)."""

from __future__ import annotations

import numpy as np
import pytest

from xserve.phoenix.training.metrics import auc
from xserve.schema import ACTION_INDEX, ACTIONS, NEGATIVE_ACTIONS, Action
from xserve.synth.oracle import ORACLE_KEYS, TrueActionModel
from xserve.synth.world import IMPRESSION_FEATURES, WORLD_SIZES, action_weights, generate_world

DAY = 86_400_000
A = len(ACTIONS)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def hand_made(weights: np.ndarray) -> dict[str, np.ndarray]:
    """Two users (ids 1, 2), two authors' topics over K = 2, three posts: 10 (a photo of user 2, followed by user 1),
    11 (a labelled quote of user 1), 12 (a video of user 2)."""
    return {
        "user_ids": np.array([1, 2]), "user_interests": np.array([[1.0, 0.0], [0.5, 0.5]], np.float32),
        "author_topics": np.array([[0.0, 1.0], [1.0, 0.0]], np.float32),
        "author_quality": np.array([0.9, 0.3], np.float32), "user_propensity": np.array([0.2, -0.1], np.float32),
        "post_ids": np.array([10, 11, 12]), "post_topic": np.array([0, 1, 0]), "post_content_author": np.array([1, 0, 1]),
        "num_topics": np.array(2), "post_author": np.array([1, 0, 1]), "post_created_at_ms": np.array([0, 0, DAY]),
        "post_labelled": np.array([False, True, False]), "post_has_photo": np.array([True, False, False]),
        "post_has_video": np.array([False, False, True]), "post_is_quote": np.array([False, True, False]),
        "follow_keys": np.array([0 * 2 + 1]),  # user index 0 follows author index 1
        "action_weights": weights, "negative_actions": np.array([a in NEGATIVE_ACTIONS for a in ACTIONS]),
        "post_has_link": np.array([False, False, False]), "post_video_ms": np.array([0, 0, 20_000]),
    }


def test_probabilities_follow_the_documented_model_by_hand():
    w = action_weights()
    model = TrueActionModel(hand_made(w))
    got = model(np.array([1, 2, 2, 2]), np.array([10, 11, 12, 99]), np.array([DAY, 0, DAY, 0]))
    # user 1 on post 10: affinity 0.75·θ[0] + 0.25·θ·φ_author1 = 0.75 + 0.25 = 1; quality 0.3; follows; 1 day old
    x = np.array([1.0, np.log((1.0 + 0.01) / (0.5 + 0.01)), 0.3 - 0.5, 1.0, np.exp(-1.0), 0.0])
    sigma = _sigmoid(0.2 + x @ w)  # (A,)
    no_negative = np.prod([1 - sigma[ACTION_INDEX[a]] for a in NEGATIVE_ACTIONS])
    for a in ACTIONS:
        i = ACTION_INDEX[a]
        if a in (Action.VIDEO_QUALITY_VIEW, Action.QUOTED_CLICK, Action.FOLLOW_AUTHOR, Action.VIDEO_OPEN,
                 Action.LINK_OPEN):
            want = 0.0  # not a video, not a quote, already followed, no link
        elif a in NEGATIVE_ACTIONS:
            want = sigma[i]
        else:
            want = sigma[i] * no_negative
        assert got[0, i] == pytest.approx(want, rel=1e-4), a
    assert got[1, ACTION_INDEX[Action.QUOTED_CLICK]] > 0 and got[1, ACTION_INDEX[Action.PHOTO_EXPAND]] == 0
    assert got[2, ACTION_INDEX[Action.VIDEO_QUALITY_VIEW]] > 0 and got[2, ACTION_INDEX[Action.FOLLOW_AUTHOR]] > 0
    assert not got[3].any()  # a post the world does not hold
    assert IMPRESSION_FEATURES[1] == "affinity" and w.shape == (6, A)


def test_expected_durations_follow_the_documented_lognormal_by_hand():
    model = TrueActionModel(hand_made(action_weights()))
    got = model.durations(np.array([1, 2, 2]), np.array([10, 12, 99]), np.array([DAY, DAY, 0]))  # (3, 3) seconds
    x_aff, q = np.log((1.0 + 0.01) / (0.5 + 0.01)), 0.3 - 0.5  # user 1 on post 10, as above
    for j, (base, w_aff, w_q, s) in enumerate([(8_000, 0.5, 1.0, 0.7), (6_000, 0.4, 0.5, 0.8), (15_000, 0.5, 1.0, 0.9)]):
        mean_s = base * np.exp(w_aff * x_aff + w_q * q + s * s / 2) / 1000
        want = 0.0 if j == 0 else mean_s  # post 10 has no video: nothing to watch
        assert got[0, j] == pytest.approx(want, rel=1e-4), j
    assert 0 < got[1, 0] <= 20.0  # a watch never outlasts the 20 s video
    assert not got[2].any()  # a post the world does not hold



def test_the_value_model_inputs_are_the_probabilities_the_dwell_and_the_durations():
    gt = hand_made(action_weights())
    gt["follow_keys"] = np.array([0 * 2 + 1, 1 * 2 + 0])  # users 1 and 2 follow each other
    model = TrueActionModel(gt)
    users, posts, times = np.array([1, 2, 2]), np.array([10, 12, 99]), np.array([DAY, DAY, 0])
    got = model.value_inputs(users, posts, times)
    assert got["scores"].shape == (3, A + 4)  # ActionScores' fields: the actions, dwell_time and three durations
    np.testing.assert_allclose(got["scores"][:, :A], model(users, posts, times), rtol=1e-6)
    np.testing.assert_allclose(got["scores"][:, A + 1:], model.durations(users, posts, times), rtol=1e-6)
    x_aff = np.log((1.0 + 0.01) / (0.5 + 0.01))  # user 1 on post 10 (as above): 4 s median, sigma 0.8
    assert got["scores"][0, A] == pytest.approx(4.0 * np.exp(0.4 * x_aff + 0.32), rel=1e-4)
    assert got["mutual"].tolist() == [True, False, False]  # 10: user 2's, for user 1; 12: user 2's own; 99 unknown
    assert got["video_ms"].tolist() == [0, 20_000, 0] and not got["has_link"].any()
    assert not got["scores"][2].any()

def test_a_ground_truth_from_before_the_oracle_is_refused():
    gt = hand_made(action_weights())
    del gt["action_weights"]
    with pytest.raises(ValueError, match="xserve seed --force"):
        TrueActionModel(gt)


def test_the_oracle_ranks_the_world_s_own_engagements():
    """Among engaged (user, post) pairs, the true probability ranks the favorited ones first (the ceiling the
    synthetic-world docs report), and the ground truth a world saves holds every key the oracle reads."""
    world = generate_world(WORLD_SIZES["tiny"], np.random.default_rng(0), 1_790_000_000_000, seed=0)
    assert set(ORACLE_KEYS) <= set(world.ground_truth)
    eng = world.engagements
    key = eng["user_id"] * 10**10 + eng["post_id"]
    pairs, first = np.unique(key, return_index=True)
    fav = np.isin(pairs, key[eng["action"] == Action.FAVORITE.value])
    prob = TrueActionModel(world.ground_truth)(eng["user_id"][first], eng["post_id"][first], eng["timestamp_ms"][first])
    assert auc(fav, prob[:, ACTION_INDEX[Action.FAVORITE]]) > 0.75
    report = np.isin(pairs, key[np.isin(eng["action"], [a.value for a in NEGATIVE_ACTIONS])])
    assert auc(report, prob[:, [ACTION_INDEX[a] for a in NEGATIVE_ACTIONS]].sum(1)) > 0.75
