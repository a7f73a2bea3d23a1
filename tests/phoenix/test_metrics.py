import math

import numpy as np
import pytest

from xserve.phoenix.training.metrics import auc, hit_rate, log_loss, ndcg, platt_fit, random_ranks, rce, recall, target_ranks


def test_auc_by_hand():
    # positives 0.9, 0.3 vs negatives 0.8, 0.1: pairs won 1, 1, 0, 1 -> 3/4
    assert auc([1, 0, 1, 0], [0.9, 0.8, 0.3, 0.1]) == pytest.approx(0.75)
    # ties count half: (0.2 vs 0.7) = 0, (0.7 vs 0.7) = 0.5 -> 0.25
    assert auc([1, 1, 0], [0.2, 0.7, 0.7]) == pytest.approx(0.25)
    assert auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    assert math.isnan(auc([1, 1], [0.1, 0.2]))


def test_log_loss_and_rce_by_hand():
    y = [1, 0, 0, 0]
    assert log_loss(y, [0.5] * 4) == pytest.approx(math.log(2))
    base = 0.25 * math.log(4) + 0.75 * math.log(4 / 3)  # CE of always predicting the rate 0.25
    assert rce(y, [0.5] * 4) == pytest.approx(100 * (1 - math.log(2) / base))  # = -23.26
    assert rce(y, [0.25] * 4) == pytest.approx(0.0, abs=1e-9)
    assert rce(y, [1 - 1e-9, 1e-9, 1e-9, 1e-9]) == pytest.approx(100.0, abs=1e-3)


def test_ranks_recall_hr_ndcg_by_hand():
    scores = np.array([[0.1, 0.5, 0.3, 0.5]])
    assert target_ranks(scores, np.array([0])).tolist() == [3]
    assert target_ranks(scores, np.array([1])).tolist() == [1]  # the tie counts against the target
    assert target_ranks(scores, np.array([1]), valid=np.array([[1, 1, 1, 0]])).tolist() == [0]
    tie_ranks = [int(target_ranks(scores, np.array([1]), rng=np.random.default_rng(s))[0]) for s in range(40)]
    assert set(tie_ranks) == {0, 1}
    ranks = np.array([0, 3, 12])
    assert recall(ranks, 10) == pytest.approx(2 / 3) and hit_rate(ranks, 1) == pytest.approx(1 / 3)
    assert ndcg(ranks, 10) == pytest.approx((1 + 1 / math.log2(5)) / 3)  # 0.476892
    r = random_ranks(np.full(20_000, 9), np.random.default_rng(0))
    assert r.min() == 0 and r.max() == 9 and abs(r.mean() - 4.5) < 0.1


def test_platt_fit_is_calibrated_in_the_mean():
    rng = np.random.default_rng(0)
    x = rng.normal(size=5000)
    y = rng.random(5000) < 1 / (1 + np.exp(-(2 * x - 1)))
    a, b = platt_fit(x, y)
    assert a == pytest.approx(2, abs=0.25) and b == pytest.approx(-1, abs=0.2)
    p = 1 / (1 + np.exp(-(a * x + b)))
    assert p.mean() == pytest.approx(y.mean(), abs=1e-6)  # MLE with an intercept matches the rate


def test_platt_fit_never_loses_to_the_rate_on_separable_data():
    x = np.r_[np.zeros(900), np.full(100, 3.0)]
    y = np.r_[np.zeros(900), np.ones(100)]  # perfectly separable
    a, b = platt_fit(x, y)
    assert rce(y, 1 / (1 + np.exp(-(a * x + b)))) > 50
