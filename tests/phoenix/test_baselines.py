"""The evaluation's baselines on hand-made logs whose answers are known."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from xserve.phoenix.training.data import aggregate
from xserve.phoenix.training.evaluate import POSITIVE, ItemKNN, PriorCounts, positive_probability
from xserve.schema import ACTION_INDEX, ACTIONS, NEGATIVE_ACTIONS, Action

W = 300_000
SPLIT = 1_000_000
FAV, CLICK = ACTION_INDEX[Action.FAVORITE], ACTION_INDEX[Action.CLICK]


def _entries(rows):
    cols = list(zip(*rows))
    return aggregate(pa.table({"user_id": list(cols[0]), "post_id": list(cols[1]), "author_id": [9] * len(rows),
                               "action": [a.value for a in cols[2]], "timestamp_ms": list(cols[3])}), W)


# training period (before SPLIT): users 1-3 engage post 10; 1 and 2 also 11; 3 and 4 click 12.
# validation: user 5 clicks 12 and favorites 10, users 6 and 7 favorite the new post 13.
LOG = _entries([
    (1, 10, Action.FAVORITE, 100_000), (2, 10, Action.FAVORITE, 100_000), (3, 10, Action.FAVORITE, 100_000),
    (1, 11, Action.FAVORITE, 400_000), (2, 11, Action.FAVORITE, 400_000),
    (3, 12, Action.CLICK, 400_000), (4, 12, Action.CLICK, 700_000),
    (5, 12, Action.CLICK, 1_100_000), (5, 10, Action.FAVORITE, 1_100_000),
    (6, 13, Action.FAVORITE, 1_200_000), (7, 13, Action.FAVORITE, 1_300_000),
])


def test_popularity_counts_strictly_before_the_time_in_every_form():
    prior = PriorCounts(LOG)
    posts = np.array([10, 10, 10, 13, 13, 13, 99])
    times = np.array([100_000, 100_001, 1_200_000, 1_200_000, 1_250_000, 1_400_000, 1_400_000])
    assert prior(FAV, posts, times).tolist() == [0, 3, 4, 0, 1, 2, 0]
    assert prior(POSITIVE, posts, times).tolist() == [0, 3, 4, 0, 1, 2, 0]
    assert prior(CLICK, np.array([12, 12]), np.array([700_000, 2_000_000])).tolist() == [1, 3]
    # the grid (every query time × every post, retrieval) equals the pairwise counts, in any query order
    query_times = np.array([1_400_000, 100_001, 1_250_000, 100_000])
    grid = prior.grid(POSITIVE, np.array([10, 13, 12, 99]), query_times)
    for q, t in enumerate(query_times):
        assert grid[q].tolist() == prior(POSITIVE, np.array([10, 13, 12, 99]), np.full(4, t)).tolist()
    assert grid[0, 1] == 2  # a post created after the split has its causal count, not 0


def test_item_knn_is_cosine_co_engagement_strictly_before_the_query_time():
    knn = ItemKNN(LOG)
    at = np.array([SPLIT])
    one = knn.user_vectors(np.array([[10, 0]]), np.array([[True, False]]), at)  # history: post 10 (users 1, 2, 3)
    got = knn.scores(one, FAV, np.array([[11, 12, 13, 10]]), at)
    # cos(10, 11 favorited) = |{1,2}| / sqrt(3·2); nobody favorited 12; 13 is not engaged yet; 10 itself: 3/3
    assert got[0].tolist() == pytest.approx([2 / np.sqrt(6), 0.0, 0.0, 1.0])
    # the candidate side counts the scored action before the time: 12 was clicked by 3 and 4 (5 clicks later)
    assert knn.scores(one, CLICK, np.array([[12]]), at)[0, 0] == pytest.approx(1 / np.sqrt(3 * 2))
    # later, user 5's favorite of 10 and click of 12 count on both sides: |{1,2,3,5} ∩ {3,4,5}| / sqrt(4·3)
    later = np.array([1_200_000])
    one_later = knn.user_vectors(np.array([[10]]), np.array([[True]]), later)
    assert knn.scores(one_later, CLICK, np.array([[12]]), later)[0, 0] == pytest.approx(2 / np.sqrt(12))
    # a longer history sums its similarities
    two = knn.user_vectors(np.array([[10, 11]]), np.array([[True, True]]), at)
    assert knn.scores(two, FAV, np.array([[11]]), at)[0, 0] == pytest.approx(2 / np.sqrt(6) + 1.0)
    # the corpus-wide form (retrieval, one time per query) equals the per-candidate one
    vectors = np.concatenate([two, one_later])
    times = np.array([SPLIT, 1_200_000])
    grid = knn.grid(vectors, POSITIVE, np.array([10, 11, 12, 13, 99]), times)
    pairs = knn.scores(vectors, POSITIVE, np.tile([10, 11, 12, 13, 99], (2, 1)), times)
    assert grid.ravel().tolist() == pytest.approx(pairs.ravel().tolist())
    assert grid[1, 0] > 0 and grid[1, 3] == 0  # 13's only favorite before 1 200 000 is user 6's


def test_positive_probability_from_action_marginals():
    rng = np.random.default_rng(0)
    sigma = rng.random((5, len(ACTIONS))) * 0.5
    neg = np.array([a in NEGATIVE_ACTIONS for a in ACTIONS])
    no_negative = np.prod(1 - sigma[:, neg], axis=1)
    marginals = np.where(neg, sigma, sigma * no_negative[:, None])  # what the oracle reports
    positive = [ACTION_INDEX[a] for a in (Action.FAVORITE, Action.REPLY, Action.REPOST, Action.QUOTE, Action.SHARE,
                                          Action.SHARE_VIA_DM, Action.SHARE_VIA_COPY_LINK, Action.FOLLOW_AUTHOR)]
    want = no_negative * (1 - np.prod(1 - sigma[:, positive], axis=1))
    assert positive_probability(marginals) == pytest.approx(want)
