"""Offline ranking metrics in plain numpy (hand-checked in ``tests/phoenix/test_metrics.py``)."""

from __future__ import annotations

import numpy as np

__all__ = ["auc", "hit_rate", "log_loss", "ndcg", "platt_fit", "random_ranks", "rce", "recall", "target_ranks"]

_EPS = 1e-7


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the Mann–Whitney rank sum, ties counted half; NaN without both classes."""
    y = np.asarray(labels, bool).ravel()
    s = np.asarray(scores, np.float64).ravel()
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based average rank of each distinct score
    rank_sum = avg_rank[inverse][y].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean binary cross-entropy (natural log), probabilities clipped to [1e-7, 1−1e-7]."""
    y = np.asarray(labels, np.float64).ravel()
    p = np.clip(np.asarray(probs, np.float64).ravel(), _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def rce(labels: np.ndarray, probs: np.ndarray) -> float:
    """Relative cross-entropy in percent: ``100·(1 − CE(probs) / CE(label rate))``.

    0 = no better than always predicting the label rate, 100 = perfect; NaN without both classes.
    """
    y = np.asarray(labels, np.float64).ravel()
    rate = y.mean() if len(y) else 0.0
    if rate <= 0.0 or rate >= 1.0:
        return float("nan")
    return float(100.0 * (1.0 - log_loss(y, probs) / log_loss(y, np.full_like(y, rate))))


def platt_fit(x: np.ndarray, labels: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """Fit ``P(y) = sigmoid(a·x + b)`` by Newton's method with a backtracking line search.

    Starts from the constant label rate (a = 0) and only takes steps that lower the log-loss,
    so the fit is never worse than the rate, even on (nearly) separable data.
    """
    x = np.asarray(x, np.float64).ravel()
    y = np.asarray(labels, np.float64).ravel()
    X = np.stack([x, np.ones_like(x)], 1)  # (N, 2)
    rate = np.clip(y.mean(), _EPS, 1 - _EPS)

    def loss(w: np.ndarray) -> float:
        z = X @ w
        return float(np.mean(np.logaddexp(0, z) - y * z))

    w = np.array([0.0, np.log(rate / (1 - rate))])
    current = loss(w)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(X @ w)))
        grad = X.T @ (p - y) / len(y)
        hess = (X * (p * (1 - p))[:, None]).T @ X / len(y) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        for _ in range(30):
            candidate = w - step
            if (new := loss(candidate)) <= current:
                break
            step = step / 2
        else:
            break
        if current - new < 1e-12:
            w, current = candidate, new
            break
        w, current = candidate, new
    return float(w[0]), float(w[1])


def target_ranks(scores: np.ndarray, target: np.ndarray, valid: np.ndarray | None = None,
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """0-based rank of ``target[q]`` in row ``q`` of ``scores (Q, N)`` among ``valid`` items.

    Ties are broken uniformly at random (the target takes a uniform place among the items that
    tie with it; without ``rng`` every tie counts against it), so a constant scorer gets no free
    first place.
    """
    s = np.asarray(scores)  # any float dtype; may be a broadcast view
    target = np.asarray(target)
    rows = np.arange(len(target))
    t = s[rows, target][:, None]  # (Q, 1)
    if valid is None:
        ahead, tie = (s > t).sum(1), (s == t).sum(1) - 1  # the target ties with itself
    else:
        ok = np.asarray(valid, bool)
        ahead = (ok & (s > t)).sum(1)
        tie = (ok & (s == t)).sum(1) - ok[rows, target]
    return ahead + (tie if rng is None else rng.integers(0, tie + 1))


def random_ranks(num_valid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Ranks a uniformly random scorer gives a target among ``num_valid`` other items (uniform 0..n)."""
    return rng.integers(0, np.asarray(num_valid) + 1)


def recall(ranks: np.ndarray, k: int) -> float:
    """Share of queries whose single target ranks in the top ``k`` (= recall@k with one target)."""
    return float(np.mean(np.asarray(ranks) < k)) if len(ranks) else float("nan")


hit_rate = recall  # HR@k with one target per query is the same number


def ndcg(ranks: np.ndarray, k: int) -> float:
    """NDCG@k with one relevant item: ``1/log2(rank+2)`` when ``rank < k``, else 0; averaged."""
    r = np.asarray(ranks, np.float64)
    return float(np.mean(np.where(r < k, 1.0 / np.log2(r + 2.0), 0.0))) if len(r) else float("nan")
