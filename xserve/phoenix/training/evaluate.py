"""Offline evaluation on the validation (newest) time slice, beside baselines and a ceiling from the same run.

Validation is every entry at or after the split recorded when the models were trained (``Prepared.split_ms``:
the CLI reads it from the checkpoint), so it never holds a row a model was trained on.

* **ranker**: per-action AUC and RCE (``metrics.rce``, percent vs the label rate)
  over validation ``RankerExamples`` (next engaged entries with their actions +
  sampled recent unengaged posts);
* **retrieval**: recall@10/100/1000 of the towers by exact brute force over the
  post corpus: one query per validation user, the target is the user's first
  validation engagement with a positive action on a post new to them, the history
  everything before it, the corpus every post at most ``train.corpus_max_age_ms``
  old at that moment (default the feed's ``mixer.max_post_age_ms``: what serving
  retrieves from) minus the history's posts; a corpus too small for a reported k
  is warned about (``corpus_warnings``);
* **next_engagement**: HR@10 / NDCG@10 of the ranker's P(favorite) ranking the
  user's next first-time favorite among ``eval_sampled_candidates − 1`` recent
  posts sampled like training negatives (``train.negatives_max_age_ms``).

Every method scores the same examples (``baselines`` and ``oracle`` report the same blocks):

* **popularity** (causal everywhere): a post's count of entries with the action (ranker), with a
  positive action (retrieval) or with a favorite (next engagement) strictly before the candidate's
  or the query's time;
* **item_knn**: item-to-item co-engagement, causal like popularity. Two posts are similar by the
  cosine of the sets of users who engaged them strictly before the query's time; a candidate scores
  the sum of its similarities to the user's history posts, counting on the candidate's side only the
  users who took the scored action on it (the action for the ranker, a positive action for
  retrieval, a favorite for next engagement);
* **random**: uniform random scores (AUC, recall, HR, NDCG); its RCE is that of the constant label
  rate, 0 by definition;
* **oracle** (a synthetic world only, when ``evaluate`` is given its ``TrueActionModel``): the
  world's true probability of each action given an impression (retrieval: of a positive action
  and no negative one). It knows nothing of exposure, so on actions that follow exposure a model
  can pass it (see ``xserve/synth/oracle.py``).

The baselines' and the oracle's RCE are those of a Platt calibration of their scores fitted on the
evaluated rows themselves, which flatters them: a bar the model has to clear with room to spare.
Ties are broken at random so constant scores earn no free ranks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from xserve.phoenix.model.features import age_buckets
from xserve.phoenix.model.ranker import PhoenixRanker
from xserve.phoenix.model.towers import PhoenixTowers
from xserve.phoenix.training.data import (
    NEGATIVE_MASK, POSITIVE_MASK, Entries, context_batch, history_index, history_start,
)
from xserve.phoenix.training.metrics import auc, hit_rate, ndcg, platt_fit, random_ranks, rce, recall, target_ranks
from xserve.phoenix.training.train import Prepared, corpus_max_age_ms, negatives_max_age_ms, ranker_examples
from xserve.schema import ACTION_INDEX, ACTIONS, DURATION_ACTIONS, Action

__all__ = ["BASELINES", "POSITIVE", "RECALL_KS", "ItemKNN", "Oracle", "PriorCounts", "corpus_warnings", "evaluate",
           "positive_probability", "viewer_dependence"]

RECALL_KS = (10, 100, 1000)
SMALL_CORPUS_FACTOR = 10  # warn when a query's corpus holds fewer than this many posts per k reported
BASELINES = ("popularity", "item_knn", "random")
_FAV = ACTION_INDEX[Action.FAVORITE]
POSITIVE = "positive"  # the key of positive entries (a positive action and no negative one), beside action indices

# (user ids (n,), post ids (n,), times (n,)) -> (n, A) probability of each action (the synthetic world's truth)
Oracle = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _is_positive(e: Entries) -> np.ndarray:
    return ((e.bits & POSITIVE_MASK) != 0) & ((e.bits & NEGATIVE_MASK) == 0)


def _key_masks(e: Entries) -> dict[int | str, np.ndarray]:
    """Entries holding each action (by index), and the positive entries (``POSITIVE``)."""
    masks: dict[int | str, np.ndarray] = {a: (e.bits >> a) & 1 == 1 for a in range(len(ACTIONS))}
    masks[POSITIVE] = _is_positive(e)
    return masks


class PriorCounts:
    """How many entries with a given action (or positive ones) a post had strictly before a time."""

    def __init__(self, e: Entries) -> None:
        self.posts = np.unique(e.post)
        self.t0 = int(e.ts.min())
        self.span = int(e.ts.max()) - self.t0 + 2
        p = np.searchsorted(self.posts, e.post)
        key = p * self.span + (e.ts - self.t0)
        self.keys = {k: np.sort(key[m]) for k, m in _key_masks(e).items()}

    def _rows(self, post: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = np.minimum(np.searchsorted(self.posts, post), len(self.posts) - 1)
        return p, self.posts[p] == post

    def __call__(self, key: int | str, post: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Counts for (post, time) pairs (arrays of one shape)."""
        p, known = self._rows(post)
        t = np.clip(ts - self.t0, 0, self.span - 1)
        keys = self.keys[key]
        n = np.searchsorted(keys, p * self.span + t) - np.searchsorted(keys, p * self.span)
        return np.where(known, n, 0)

    def grid(self, key: int | str, post: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Counts ``(Q, W)`` for every pair of query times ``ts (Q,)`` and posts ``post (W,)``: each event of a
        post is placed at the first query after it, then summed down the time-sorted queries."""
        order = np.argsort(ts, kind="stable")
        t_sorted = np.clip(ts[order] - self.t0, 0, self.span - 1)
        p, known = self._rows(post)
        keys = self.keys[key]
        lo = np.where(known, np.searchsorted(keys, p * self.span), 0)
        hi = np.where(known, np.searchsorted(keys, (p + 1) * self.span), 0)
        col = np.repeat(np.arange(len(post)), hi - lo)
        at = np.repeat(lo, hi - lo) + (np.arange(col.size) - np.repeat(np.cumsum(hi - lo) - (hi - lo), hi - lo))
        first_query = np.searchsorted(t_sorted, keys[at] % self.span, side="right")  # strictly before that query
        counts = np.zeros((len(ts) + 1, len(post)), np.float32)
        np.add.at(counts, (first_query, col), 1.0)
        out = np.empty((len(ts), len(post)), np.float32)
        out[order] = np.cumsum(counts, 0)[:-1]
        return out


class ItemKNN:
    """Item-to-item co-engagement, causal: ``score(c) = Σ_h cos_t(h, c)`` over the history posts h.

    ``cos_t(h, c) = |U_t(h) ∩ U_{k,t}(c)| / sqrt(|U_t(h)| · |U_{k,t}(c)|)`` with ``U_t(h)`` the users with an
    entry on h strictly before the query's time t and ``U_{k,t}(c)`` those whose entry on c holds ``k`` (an
    action index or ``POSITIVE``), also before t. Computed through users: a history gives a user vector
    ``Σ_h 1/sqrt|U_t(h)|`` over U_t(h), and a candidate sums it over ``U_{k,t}(c)``. Causal like the
    popularity baseline: counted over the training period only, every post newer than the split would
    score 0, and in a feed of 48-hour posts the engaged ones are mostly new (AUC fell below random).
    """

    def __init__(self, e: Entries) -> None:
        self.users, user = np.unique(e.user, return_inverse=True)
        self.posts, post = np.unique(e.post, return_inverse=True)
        self.csr = {k: self._csr(post[m], user[m], e.ts[m]) for k, m in _key_masks(e).items()}
        self.csr["any"] = self._csr(post, user, e.ts)

    def _csr(self, post: np.ndarray, user: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, ...]:
        """(indptr (P+1,), users, first time) of each post's distinct users."""
        n_users = max(len(self.users), 1)
        pairs, inv = np.unique(post.astype(np.int64) * n_users + user, return_inverse=True)
        first = np.full(len(pairs), np.iinfo(np.int64).max, np.int64)
        np.minimum.at(first, inv, ts)
        indptr = np.zeros(len(self.posts) + 1, np.int64)
        np.cumsum(np.bincount(pairs // n_users, minlength=len(self.posts)), out=indptr[1:])
        return indptr, pairs % n_users, first

    def _gather(self, kind: str | int, post: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For flat ``post`` ids: (pair index, user index, first time) of every user of each post, grouped by
        pair in order, and where each pair's group starts."""
        indptr, users, first = self.csr[kind]
        p = np.minimum(np.searchsorted(self.posts, post), max(len(self.posts) - 1, 0))
        known = (self.posts[p] == post) if len(self.posts) else np.zeros(len(post), bool)
        lo, n = indptr[p], np.where(known, indptr[p + 1] - indptr[p], 0)
        pair = np.repeat(np.arange(len(post)), n)
        at = np.repeat(lo, n) + (np.arange(pair.size) - np.repeat(np.cumsum(n) - n, n))
        return pair, users[at], first[at], np.cumsum(n) - n

    def user_vectors(self, hist_post: np.ndarray, valid: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """History posts ``(B, S)`` with validity, at query times ``ts (B,)`` → ``(B, U)`` float32 user vectors."""
        b, s = hist_post.shape
        pair, user, first, _ = self._gather("any", np.where(valid, hist_post, -1).ravel())
        before = first < ts[pair // s]
        n = np.bincount(pair[before], minlength=b * s)
        row = pair[before] // s
        out = np.bincount(row * len(self.users) + user[before], weights=1.0 / np.sqrt(n[pair[before]]),
                          minlength=b * len(self.users))
        return out.reshape(b, len(self.users)).astype(np.float32)

    def scores(self, vectors: np.ndarray, kind: int | str, cand_post: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """User vectors ``(B, U)``, candidates ``(B, C)`` and query times ``ts (B,)`` → scores ``(B, C)``."""
        b, c = cand_post.shape
        pair, user, first, _ = self._gather(kind, cand_post.ravel())
        before = first < ts[pair // c]
        total = np.bincount(pair, weights=vectors[pair // c, user] * before, minlength=b * c)
        n = np.bincount(pair, weights=before, minlength=b * c)
        return (total / np.sqrt(np.maximum(n, 1))).reshape(b, c)

    def grid(self, vectors: np.ndarray, kind: int | str, post: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """User vectors ``(Q, U)`` at query times ``ts (Q,)`` and posts ``(W,)`` → scores ``(Q, W)``."""
        pair, user, first, starts = self._gather(kind, post)
        out = np.zeros((len(ts), len(post)), np.float32)
        if len(pair) == 0:
            return out
        nonempty = np.flatnonzero(np.diff(np.r_[starts, len(pair)]) > 0)  # reduceat needs non-empty groups
        for q in _batches(len(ts), max(1, 4_000_000 // len(pair))):  # (q, pairs) blocks of ~16 MB
            before = first[None, :] < ts[q, None]  # (q, P)
            total = np.add.reduceat(vectors[q][:, user] * before, starts[nonempty], axis=1)
            n = np.add.reduceat(before, starts[nonempty], axis=1)
            out[q[:, None], nonempty[None, :]] = total / np.sqrt(np.maximum(n, 1))
        return out


def _first_time(e: Entries) -> np.ndarray:
    """(E,) True where the entry is the user's first with that post."""
    order = np.lexsort((e.ts, e.post, e.user))
    first = np.ones(len(e), bool)
    first[1:] = (e.user[order][1:] != e.user[order][:-1]) | (e.post[order][1:] != e.post[order][:-1])
    out = np.empty(len(e), bool)
    out[order] = first
    return out


def _query_targets(e: Entries, wanted: np.ndarray, split_ms: int, limit: int, rng: np.random.Generator) -> np.ndarray:
    """Per user, the first validation entry satisfying ``wanted`` and new to the user; at most ``limit``."""
    ok = wanted & (e.ts >= split_ms) & _first_time(e)
    idx = np.flatnonzero(ok)
    users = e.row_user()[idx]
    first = idx[np.r_[True, users[1:] != users[:-1]]] if len(idx) else idx
    starts = e.starts[e.row_user()[first]]
    first = first[first > starts]  # needs some history
    if len(first) > limit:
        first = np.sort(rng.choice(first, limit, replace=False))
    return first


def _batches(n: int, size: int):
    for i in range(0, n, size):
        yield np.arange(i, min(n, i + size))


def positive_probability(prob: np.ndarray) -> np.ndarray:
    """``(..., A)`` action probabilities → P(an entry with a positive action and no negative one).

    Positives are dropped when a negative fires, so ``P(a) = σ_a · P(no negative)`` with independent
    draws: recover each ``σ_a``, then ``P(no negative) · (1 − Π_positive (1 − σ_a))``.
    """
    neg = np.array([bool(NEGATIVE_MASK >> a & 1) for a in range(len(ACTIONS))])
    pos = np.array([bool(POSITIVE_MASK >> a & 1) for a in range(len(ACTIONS))])
    no_negative = np.prod(1.0 - prob[..., neg], axis=-1)
    sigma = prob[..., pos] / np.maximum(no_negative, 1e-12)[..., None]
    return no_negative * (1.0 - np.prod(1.0 - np.clip(sigma, 0.0, 1.0), axis=-1))


def _methods(oracle: Oracle | None) -> tuple[str, ...]:
    return ("model", *BASELINES) + (("oracle",) if oracle is not None else ())


def _calibrated_rce(y: np.ndarray, score: np.ndarray, transform: Callable[[np.ndarray], np.ndarray]) -> float:
    x = transform(score.astype(np.float64))
    w, b0 = platt_fit(x, y)
    return rce(y, 1 / (1 + np.exp(-(w * x + b0))))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


@torch.no_grad()
def _ranker_metrics(data: Prepared, ranker: PhoenixRanker, prior: PriorCounts, knn: ItemKNN, oracle: Oracle | None,
                    rng: np.random.Generator) -> dict[str, dict]:
    tc = data.config.train
    ex = ranker_examples(data, rng, validation=True)
    rows = np.arange(len(ex))
    if len(rows) > tc.eval_max_queries:
        rows = np.sort(rng.choice(rows, tc.eval_max_queries, replace=False))
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("logits", "knn", "label", "user", "post", "ts",
                                                          "durations", "duration_label", "swapped", "swapped_user")}
    e, c = data.entries, data.corpus
    for b in _batches(len(rows), tc.batch_size):
        r = rows[b]
        ctx, cand, lab, _ = ex.batch(r, data.featurizer)
        scored = ranker.score_candidates(ranker.encode_context(ctx), cand)
        valid = cand.valid.numpy()
        now = e.ts[ex.pos_start[r]]  # the example's time: its first positive
        # the same candidates scored for another row's viewer (its user and history): viewer_dependence. Rows
        # half a batch apart, as adjacent rows are often one user's cuts; pairs of one user are left out below
        other = np.roll(np.arange(len(r)), len(r) // 2)
        swapped_ctx = context_batch(ex.entries, ex.hist_start[r][other], ex.hist_len[r][other], data.featurizer,
                                    now_ms=now)
        swapped = ranker.score_candidates(ranker.encode_context(swapped_ctx), cand).logits.numpy()
        # candidate post ids and the time each was (or would have been) seen, for the baselines
        j = np.arange(ex.num_pos)
        pidx = ex.pos_start[r, None] + np.minimum(j, np.maximum(ex.pos_len[r, None] - 1, 0))
        neg = np.maximum(ex.neg_post[r], 0)
        post = np.concatenate([e.post[pidx], c.post[neg]], 1)
        ts = np.concatenate([e.ts[pidx], e.ts[ex.neg_ref[r]]], 1)
        hidx, hvalid = history_index(ex.hist_start[r], ex.hist_len[r])
        vectors = knn.user_vectors(e.post[hidx], hvalid, now)
        knn_scores = np.stack([knn.scores(vectors, a, post, now) for a in range(len(ACTIONS))], -1)  # (B, C, A)
        parts["logits"].append(scored.logits.numpy()[valid])
        parts["knn"].append(knn_scores[valid])
        parts["label"].append(lab[valid])
        parts["user"].append(np.broadcast_to(e.user[ex.hist_start[r], None], post.shape)[valid])
        parts["post"].append(post[valid])
        parts["ts"].append(ts[valid])
        parts["durations"].append(scored.durations_s.numpy()[valid])  # (n, 3) seconds given each action
        parts["duration_label"].append(ex.durations(r)[valid])
        parts["swapped"].append(swapped[valid])
        parts["swapped_user"].append(np.broadcast_to(e.user[ex.hist_start[r][other], None], post.shape)[valid])
    if not parts["logits"]:
        return {}
    logits, knn_p, y, user, post, ts = (np.concatenate(parts[k]) for k in ("logits", "knn", "label", "user", "post",
                                                                           "ts"))
    p = torch.sigmoid(torch.from_numpy(logits)).numpy()
    truth = oracle(user, post, ts) if oracle is not None else None
    out: dict[str, dict] = {k: {"auc": {}, "rce": {}} for k in _methods(oracle)}
    for a, action in enumerate(ACTIONS):
        ya = y[:, a]
        if ya.min() == ya.max():
            continue  # absent (or everywhere) in the validation data: AUC undefined
        name = action.value
        out["model"]["auc"][name], out["model"]["rce"][name] = auc(ya, p[:, a]), rce(ya, p[:, a])
        counts = prior(a, post, ts)
        out["popularity"]["auc"][name] = auc(ya, counts)
        out["popularity"]["rce"][name] = _calibrated_rce(ya, counts, np.log1p)
        out["item_knn"]["auc"][name] = auc(ya, knn_p[:, a])
        out["item_knn"]["rce"][name] = _calibrated_rce(ya, knn_p[:, a], np.log1p)
        out["random"]["auc"][name] = auc(ya, rng.random(len(ya)))
        out["random"]["rce"][name] = rce(ya, np.full(len(ya), ya.mean()))
        if truth is not None:
            out["oracle"]["auc"][name] = auc(ya, truth[:, a])
            out["oracle"]["rce"][name] = _calibrated_rce(ya, truth[:, a], _logit)
    swapped, swapped_user = np.concatenate(parts["swapped"]), np.concatenate(parts["swapped_user"])
    other = swapped_user != user
    out["model"]["viewer_dependence"] = viewer_dependence(logits[other, _FAV], swapped[other, _FAV])
    if truth is not None:
        out["oracle"]["viewer_dependence"] = viewer_dependence(
            _logit(truth[other, _FAV]), _logit(oracle(swapped_user[other], post[other], ts[other])[:, _FAV]))
    out["durations"] = _duration_metrics(np.concatenate(parts["durations"]), np.concatenate(parts["duration_label"]),
                                         user, post, ts, oracle)
    return out


def viewer_dependence(logits: np.ndarray, swapped_logits: np.ndarray) -> float:
    """How much a score depends on who the viewer is: the mean change of the candidates' logits when another
    example's viewer (user and history) is put in, over the spread of the logits across candidates. 0 = the same
    order for everyone (popularity, recency). On favorite an untrained ranker measured about 0.7, the small
    synthetic world's truth 1.0, a trained ranker 0.01 (docs/phoenix.md, "Does the ranker use the viewer?")."""
    spread = float(np.std(logits)) if len(logits) else 0.0
    return float(np.mean(np.abs(logits - swapped_logits)) / spread) if spread > 0 else 0.0


def _duration_metrics(predicted: np.ndarray, label: np.ndarray, user: np.ndarray, post: np.ndarray, ts: np.ndarray,
                      oracle: Oracle | None) -> dict[str, dict[str, float]]:
    """Per method, the mean absolute error in log(1 + seconds) of each ``DURATION_ACTIONS`` duration (issue 17)
    over the validation rows that carry it: ``model``, ``mean`` (those rows' own mean: a floor that knows the
    answers' mean) and, for a synthetic world, ``oracle`` (its expected duration, ``TrueActionModel.durations``)."""
    expected = oracle.durations(user, post, ts) if oracle is not None and hasattr(oracle, "durations") else None
    out: dict[str, dict[str, float]] = {"model": {}, "mean": {}, **({"oracle": {}} if expected is not None else {})}
    for j, action in enumerate(DURATION_ACTIONS):
        rows = label[:, j] > 0
        if not rows.any():
            continue
        y = np.log1p(label[rows, j])
        name = {Action.VIDEO_OPEN: "watch_time", Action.PROFILE_CLICK: "profile_visit_time"}.get(action,
                                                                                                  "click_dwell_time")
        out["model"][name] = float(np.abs(np.log1p(predicted[rows, j]) - y).mean())
        out["mean"][name] = float(np.abs(y.mean() - y).mean())
        if expected is not None:
            out["oracle"][name] = float(np.abs(np.log1p(expected[rows, j]) - y).mean())
    return out


def corpus_warnings(corpus_per_query: np.ndarray, max_age_ms: int) -> list[str]:
    """One line per reported k that the retrieval corpus is too small for: a median corpus of ``N`` posts per
    query under ``SMALL_CORPUS_FACTOR · k`` (random alone then reaches recall@k = k/N > 10 %; at N <= k, 1.0)."""
    if len(corpus_per_query) == 0:
        return []
    n = int(np.median(corpus_per_query))
    return [f"retrieval recall@{k} is measured over a median corpus of {n} posts per query (random scores "
            f"{min(1.0, k / max(n, 1)):.2f}): widen the corpus window (train.corpus_max_age_ms, now "
            f"{max_age_ms / 3_600_000:g} h; `xserve evaluate --corpus-max-age`) for a log whose items stay relevant longer"
            for k in RECALL_KS if n < SMALL_CORPUS_FACTOR * k]


@torch.no_grad()
def _retrieval_metrics(data: Prepared, towers: PhoenixTowers, prior: PriorCounts, knn: ItemKNN,
                       oracle: Oracle | None, rng: np.random.Generator,
                       warn: Callable[[str], None] | None = None) -> dict[str, dict]:
    cfg, e, c = data.config, data.entries, data.corpus
    tc = cfg.train
    targets = _query_targets(e, _is_positive(e), data.split_ms, tc.eval_max_queries, rng)
    if len(targets) == 0 or len(c) == 0:
        return {}
    h = data.hasher
    corpus_emb = torch.cat([towers.candidate_embeddings(torch.from_numpy(h("post", c.post[b])),
                                                        torch.from_numpy(h("author", c.author[b])))
                            for b in _batches(len(c), 8192)])  # (N, D)
    by_id = np.argsort(c.post)
    sorted_ids = c.post[by_id]

    def corpus_row(posts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        at = np.minimum(np.searchsorted(sorted_ids, posts), len(c) - 1)
        return by_id[at], sorted_ids[at] == posts  # corpus row of each post, and whether it is there

    target_col, found = corpus_row(e.post[targets])
    max_age = corpus_max_age_ms(cfg)
    in_window = found & (e.ts[targets] - c.created[target_col] <= max_age)  # retrievable when engaged
    if warn is not None and in_window.sum() < found.sum() / 2:
        warn(f"retrieval: {int(found.sum() - in_window.sum())} of {int(found.sum())} validation targets were older "
             f"than the corpus window ({max_age / 3_600_000:g} h, train.corpus_max_age_ms) when engaged and are not "
             "scored: widen it (`xserve evaluate --corpus-max-age`) for a log whose items stay relevant longer")
    targets, target_col = targets[in_window], target_col[in_window]
    if len(targets) == 0:
        return {}
    order = np.argsort(e.ts[targets], kind="stable")  # time-ordered batches share a narrow corpus window
    targets, target_col = targets[order], target_col[order]
    ranks: dict[str, list[np.ndarray]] = {k: [] for k in _methods(oracle)}
    corpus_sizes: list[np.ndarray] = []
    user_start = e.starts[e.row_user()[targets]]
    for b in _batches(len(targets), 256):
        t = targets[b]
        now = e.ts[t][:, None]
        lo = int(np.searchsorted(c.created, now.min() - max_age, side="left"))
        hi = int(np.searchsorted(c.created, now.max(), side="right"))
        window = slice(lo, hi)  # the corpus rows any query in this batch can see
        valid = (c.created[window][None, :] <= now) & (c.created[window][None, :] >= now - max_age)  # (q, W)
        hist_start = history_start(user_start[b], t, cfg.phoenix.history_len, cfg.mixer.history_trim_block)
        ctx = context_batch(e, hist_start, t - hist_start, data.featurizer, now_ms=e.ts[t])
        idx, in_hist = history_index(hist_start, t - hist_start)
        row, found = corpus_row(e.post[idx])  # (q, S)
        seen = in_hist & found & (row >= lo) & (row < hi)
        valid[np.nonzero(seen)[0], row[seen] - lo] = False  # posts already in the history are not retrieved
        col = target_col[b] - lo
        valid[np.arange(len(t)), col] = True
        scores = {
            "model": (towers.user_embeddings(ctx) @ corpus_emb[window].T).numpy(),  # (q, W)
            "popularity": prior.grid(POSITIVE, c.post[window], e.ts[t]),
            "item_knn": knn.grid(knn.user_vectors(e.post[idx], in_hist, e.ts[t]), POSITIVE, c.post[window], e.ts[t]),
        }
        if oracle is not None:
            w = hi - lo
            scores["oracle"] = np.concatenate([
                positive_probability(oracle(np.repeat(e.user[t[q]], w), np.tile(c.post[window], len(q)),
                                             np.repeat(e.ts[t[q]], w)).reshape(len(q), w, -1))
                for q in _batches(len(t), max(1, 500_000 // max(w, 1)))])  # chunks of ~500k pairs (~150 MB)
        for name, s in scores.items():
            ranks[name].append(target_ranks(s, col, valid, rng))
        ranks["random"].append(random_ranks(valid.sum(1) - 1, rng))
        corpus_sizes.append(valid.sum(1))
    for line in corpus_warnings(np.concatenate(corpus_sizes) if corpus_sizes else np.zeros(0), max_age):
        if warn is not None:
            warn(line)
    return {k: {f"recall@{n}": recall(np.concatenate(v), n) for n in RECALL_KS} for k, v in ranks.items()}


@torch.no_grad()
def _next_engagement_metrics(data: Prepared, ranker: PhoenixRanker, prior: PriorCounts, knn: ItemKNN,
                             oracle: Oracle | None, rng: np.random.Generator) -> dict[str, dict]:
    cfg, e, c = data.config, data.entries, data.corpus
    tc = cfg.train
    targets = _query_targets(e, (e.bits >> _FAV) & 1 == 1, data.split_ms, tc.eval_max_queries, rng)
    if len(targets) == 0:
        return {}
    m = tc.eval_sampled_candidates
    user_start = e.starts[e.row_user()[targets]]
    ranks: dict[str, list[np.ndarray]] = {k: [] for k in _methods(oracle)}
    for b in _batches(len(targets), tc.batch_size):
        t = targets[b]
        q = len(t)
        neg = c.sample_recent(np.repeat(e.ts[t], m - 1).reshape(q, m - 1), negatives_max_age_ms(cfg), rng)
        neg_ok = (neg >= 0) & (c.post[np.maximum(neg, 0)] != e.post[t][:, None])
        post = np.concatenate([e.post[t][:, None], np.where(neg_ok, c.post[np.maximum(neg, 0)], 0)], 1)  # (q, m)
        author = np.concatenate([e.author[t][:, None], c.author[np.maximum(neg, 0)]], 1)
        created = np.concatenate([e.created[t][:, None], c.known_created_ms[np.maximum(neg, 0)]], 1)
        now = e.ts[t][:, None]
        content = None
        if e.content is not None and c.content is not None:
            content = np.concatenate([e.content[t][:, None], c.content[np.maximum(neg, 0)]], 1)  # (q, m, M)
        cand = data.featurizer.candidates(post, author, np.repeat(e.surface[t][:, None], m, 1),
                                          age_buckets(created, now, cfg.phoenix.age_buckets), content)
        hist_start = history_start(user_start[b], t, cfg.phoenix.history_len, cfg.mixer.history_trim_block)
        ctx = context_batch(e, hist_start, t - hist_start, data.featurizer, now_ms=e.ts[t])
        idx, in_hist = history_index(hist_start, t - hist_start)
        scores = {
            "model": ranker.score_candidates(ranker.encode_context(ctx), cand).logits[..., _FAV].numpy(),
            "popularity": prior(_FAV, post.ravel(), np.repeat(e.ts[t], m)).reshape(q, m),
            "item_knn": knn.scores(knn.user_vectors(e.post[idx], in_hist, e.ts[t]), _FAV, post, e.ts[t]),
        }
        if oracle is not None:
            scores["oracle"] = oracle(np.repeat(e.user[t], m), post.ravel(), np.repeat(e.ts[t], m))[:, _FAV].reshape(q, m)
        valid = post != 0
        zero = np.zeros(q, np.int64)
        for name, s in scores.items():
            ranks[name].append(target_ranks(s, zero, valid, rng))
        ranks["random"].append(random_ranks(valid.sum(1) - 1, rng))
    return {k: {"hr@10": hit_rate(np.concatenate(v), 10), "ndcg@10": ndcg(np.concatenate(v), 10)}
            for k, v in ranks.items()}


def evaluate(data: Prepared, ranker: PhoenixRanker, towers: PhoenixTowers, seed: int = 0,
             oracle: Oracle | None = None, durations: bool = False,
             warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """All metrics as the ``xserve evaluate --json`` object (see the module docstring); ``oracle`` (a
    synthetic world's ``TrueActionModel``) adds the ``oracle`` block; ``durations`` adds a ``durations`` block
    (the duration head's log-seconds error, ``_duration_metrics``); ``warn`` is called with one line per
    figure the data cannot support (``corpus_warnings``)."""
    rng = np.random.default_rng(seed)
    ranker.eval()
    towers.eval()
    prior = PriorCounts(data.entries)
    knn = ItemKNN(data.entries)
    r = _ranker_metrics(data, ranker, prior, knn, oracle, rng)
    duration_block = r.pop("durations", {})
    t = _retrieval_metrics(data, towers, prior, knn, oracle, rng, warn)
    n = _next_engagement_metrics(data, ranker, prior, knn, oracle, rng)

    def block(method: str) -> dict[str, Any]:
        return {"ranker": r.get(method) or {"auc": {}, "rce": {}}, "retrieval": t.get(method, {}),
                "next_engagement": n.get(method, {})}

    out = {**block("model"), "baselines": {name: block(name) for name in BASELINES}}
    if oracle is not None:
        out["oracle"] = block("oracle")
    if durations:
        out["durations"] = duration_block
    return out
