"""Offline evaluation on the validation (newest) time slice, beside two baselines from the same run.

* **ranker**: per-action AUC and RCE (``metrics.rce``, percent vs the label rate)
  over validation ``RankerExamples`` (next engaged entries with their actions +
  sampled recent unengaged posts);
* **retrieval**: recall@10/100/1000 of the towers by exact brute force over the
  post corpus: one query per validation user, the target is the user's first
  validation engagement with a positive action on a post new to them, the history
  everything before it, the corpus every post at most ``max_post_age_ms`` old at
  that moment (what serving retrieves from) minus the history's posts;
* **next_engagement**: HR@10 / NDCG@10 of the ranker's P(favorite) ranking the
  user's next first-time favorite among ``eval_sampled_candidates − 1`` recent
  posts sampled like training negatives.

Baselines, computed on the same examples:

* **popularity**: for the ranker, the post's count of that action before the
  candidate's time (causal), Platt-calibrated on the evaluated rows for RCE
  (which flatters it); for retrieval, the post's positive count in the training
  period; for next engagement, its prior favorite count;
* **random**: uniform random scores (AUC, recall, HR, NDCG); its RCE is that of
  the constant label rate, 0 by definition.

Ties are broken at random so constant scores earn no free ranks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from xserve.phoenix.training.data import NEGATIVE_MASK, POSITIVE_MASK, Entries, RankerExamples, context_batch, history_index
from xserve.phoenix.model.features import age_buckets
from xserve.phoenix.training.metrics import auc, hit_rate, ndcg, platt_fit, random_ranks, rce, recall, target_ranks
from xserve.phoenix.model.ranker import PhoenixRanker
from xserve.phoenix.model.towers import PhoenixTowers
from xserve.phoenix.training.train import Prepared
from xserve.schema import ACTION_INDEX, ACTIONS, Action

__all__ = ["RECALL_KS", "evaluate"]

RECALL_KS = (10, 100, 1000)
_FAV = ACTION_INDEX[Action.FAVORITE]


class PriorCounts:
    """How many entries with a given action a post had strictly before a time, for any (post, time)."""

    def __init__(self, e: Entries) -> None:
        self.posts = np.unique(e.post)
        self.t0 = int(e.ts.min())
        self.span = int(e.ts.max()) - self.t0 + 2
        p = np.searchsorted(self.posts, e.post)
        key = p * self.span + (e.ts - self.t0)
        self.keys = {a: np.sort(key[(e.bits >> a) & 1 == 1]) for a in range(len(ACTIONS))}

    def __call__(self, action: int, post: np.ndarray, ts: np.ndarray) -> np.ndarray:
        p = np.minimum(np.searchsorted(self.posts, post), len(self.posts) - 1)
        known = self.posts[p] == post
        t = np.clip(ts - self.t0, 0, self.span - 1)
        keys = self.keys[action]
        n = np.searchsorted(keys, p * self.span + t) - np.searchsorted(keys, p * self.span)
        return np.where(known, n, 0)


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


@torch.no_grad()
def _ranker_metrics(data: Prepared, ranker: PhoenixRanker, prior: PriorCounts, rng: np.random.Generator):
    cfg = data.config
    tc = cfg.train
    ex = RankerExamples.build(data.entries, data.corpus, split_ms=data.split_ms, validation=True,
                              num_pos=tc.ranker_positives, num_neg=tc.ranker_negatives,
                              history_len=cfg.phoenix.history_len, max_age_ms=cfg.mixer.max_post_age_ms, rng=rng)
    rows = np.arange(len(ex))
    if len(rows) > tc.eval_max_queries:
        rows = np.sort(rng.choice(rows, tc.eval_max_queries, replace=False))
    probs, labels, posts, times = [], [], [], []
    e, c = data.entries, data.corpus
    for b in _batches(len(rows), tc.batch_size):
        r = rows[b]
        ctx, cand, lab, _ = ex.batch(r, data.featurizer)
        p = torch.sigmoid(ranker.score_candidates(ranker.encode_context(ctx), cand).logits).numpy()
        valid = cand.valid.numpy()
        # candidate post ids and the time each was (or would have been) seen, for the popularity baseline
        j = np.arange(ex.num_pos)
        pidx = ex.pos_start[r, None] + np.minimum(j, np.maximum(ex.pos_len[r, None] - 1, 0))
        neg = np.maximum(ex.neg_post[r], 0)
        post = np.concatenate([e.post[pidx], c.post[neg]], 1)
        ts = np.concatenate([e.ts[pidx], e.ts[ex.neg_ref[r]]], 1)
        probs.append(p[valid]); labels.append(lab[valid]); posts.append(post[valid]); times.append(ts[valid])
    if not probs:
        return {}, {}, {}
    p, y, post, ts = (np.concatenate(x) for x in (probs, labels, posts, times))
    model, pop, rnd = {"auc": {}, "rce": {}}, {"auc": {}, "rce": {}}, {"auc": {}, "rce": {}}
    for a, action in enumerate(ACTIONS):
        ya = y[:, a]
        if ya.min() == ya.max():
            continue  # absent (or everywhere) in the validation data: AUC undefined
        name = action.value
        model["auc"][name], model["rce"][name] = auc(ya, p[:, a]), rce(ya, p[:, a])
        x = np.log1p(prior(a, post, ts).astype(np.float64))
        w, b0 = platt_fit(x, ya)
        pop["auc"][name], pop["rce"][name] = auc(ya, x), rce(ya, 1 / (1 + np.exp(-(w * x + b0))))
        rnd["auc"][name], rnd["rce"][name] = auc(ya, rng.random(len(ya))), rce(ya, np.full(len(ya), ya.mean()))
    return model, pop, rnd


@torch.no_grad()
def _retrieval_metrics(data: Prepared, towers: PhoenixTowers, rng: np.random.Generator):
    cfg, e, c = data.config, data.entries, data.corpus
    tc = cfg.train
    positive = ((e.bits & POSITIVE_MASK) != 0) & ((e.bits & NEGATIVE_MASK) == 0)
    targets = _query_targets(e, positive, data.split_ms, tc.eval_max_queries, rng)
    if len(targets) == 0 or len(c) == 0:
        return {}, {}, {}
    h = data.hasher
    corpus_emb = torch.cat([towers.candidate_embeddings(torch.from_numpy(h("post", c.post[b])),
                                                        torch.from_numpy(h("author", c.author[b])))
                            for b in _batches(len(c), 8192)])  # (N, D)
    by_id = np.argsort(c.post)
    sorted_ids = c.post[by_id]

    def corpus_row(posts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        at = np.minimum(np.searchsorted(sorted_ids, posts), len(c) - 1)
        return by_id[at], sorted_ids[at] == posts  # corpus row of each post, and whether it is there

    pop_score = np.zeros(len(c))  # positives per post in the training period
    u, n = np.unique(e.post[positive & (e.ts < data.split_ms)], return_counts=True)
    row, found = corpus_row(u)
    pop_score[row[found]] = n[found]
    target_col, found = corpus_row(e.post[targets])
    max_age = cfg.mixer.max_post_age_ms
    found &= e.ts[targets] - c.created[target_col] <= max_age  # retrievable when engaged
    targets, target_col = targets[found], target_col[found]
    order = np.argsort(e.ts[targets], kind="stable")  # time-ordered batches share a narrow corpus window
    targets, target_col = targets[order], target_col[order]
    ranks: dict[str, list[np.ndarray]] = {"model": [], "popularity": [], "random": []}
    user_start = e.starts[e.row_user()[targets]]
    for b in _batches(len(targets), 256):
        t = targets[b]
        now = e.ts[t][:, None]
        lo = int(np.searchsorted(c.created, now.min() - max_age, side="left"))
        hi = int(np.searchsorted(c.created, now.max(), side="right"))
        window = slice(lo, hi)  # the corpus rows any query in this batch can see
        valid = (c.created[window][None, :] <= now) & (c.created[window][None, :] >= now - max_age)  # (q, W)
        hist_start = np.maximum(user_start[b], t - cfg.phoenix.history_len)
        ctx = context_batch(e, hist_start, t - hist_start, data.featurizer)
        idx, in_hist = history_index(hist_start, t - hist_start)
        row, found = corpus_row(e.post[idx])  # (q, S)
        seen = in_hist & found & (row >= lo) & (row < hi)
        valid[np.nonzero(seen)[0], row[seen] - lo] = False  # posts already in the history are not retrieved
        scores = (towers.user_embeddings(ctx) @ corpus_emb[window].T).numpy()  # (q, W)
        col = target_col[b] - lo
        valid[np.arange(len(t)), col] = True
        ranks["model"].append(target_ranks(scores, col, valid, rng))
        ranks["popularity"].append(target_ranks(np.broadcast_to(pop_score[window], scores.shape), col, valid, rng))
        ranks["random"].append(random_ranks(valid.sum(1) - 1, rng))
    out = {k: {f"recall@{n}": recall(np.concatenate(v), n) for n in RECALL_KS} for k, v in ranks.items()}
    return out["model"], out["popularity"], out["random"]


@torch.no_grad()
def _next_engagement_metrics(data: Prepared, ranker: PhoenixRanker, prior: PriorCounts, rng: np.random.Generator):
    cfg, e, c = data.config, data.entries, data.corpus
    tc = cfg.train
    targets = _query_targets(e, (e.bits >> _FAV) & 1 == 1, data.split_ms, tc.eval_max_queries, rng)
    if len(targets) == 0:
        return {}, {}, {}
    m = tc.eval_sampled_candidates
    user_start = e.starts[e.row_user()[targets]]
    ranks: dict[str, list[np.ndarray]] = {"model": [], "popularity": [], "random": []}
    for b in _batches(len(targets), tc.batch_size):
        t = targets[b]
        q = len(t)
        neg = c.sample_recent(np.repeat(e.ts[t], m - 1).reshape(q, m - 1), cfg.mixer.max_post_age_ms, rng)
        neg_ok = (neg >= 0) & (c.post[np.maximum(neg, 0)] != e.post[t][:, None])
        post = np.concatenate([e.post[t][:, None], np.where(neg_ok, c.post[np.maximum(neg, 0)], 0)], 1)  # (q, m)
        author = np.concatenate([e.author[t][:, None], c.author[np.maximum(neg, 0)]], 1)
        created = np.concatenate([e.created[t][:, None], c.known_created_ms[np.maximum(neg, 0)]], 1)
        now = e.ts[t][:, None]
        cand = data.featurizer.candidates(post, author, np.repeat(e.surface[t][:, None], m, 1),
                                          age_buckets(created, now, cfg.phoenix.age_buckets))
        hist_start = np.maximum(user_start[b], t - cfg.phoenix.history_len)
        ctx = context_batch(e, hist_start, t - hist_start, data.featurizer)
        p = ranker.score_candidates(ranker.encode_context(ctx), cand).logits[..., _FAV].numpy()
        valid = post != 0
        zero = np.zeros(q, np.int64)
        ranks["model"].append(target_ranks(p, zero, valid, rng))
        pop = prior(_FAV, post.ravel(), np.repeat(e.ts[t], m)).reshape(q, m)
        ranks["popularity"].append(target_ranks(pop, zero, valid, rng))
        ranks["random"].append(random_ranks(valid.sum(1) - 1, rng))
    out = {k: {"hr@10": hit_rate(np.concatenate(v), 10), "ndcg@10": ndcg(np.concatenate(v), 10)}
           for k, v in ranks.items()}
    return out["model"], out["popularity"], out["random"]


def evaluate(data: Prepared, ranker: PhoenixRanker, towers: PhoenixTowers, seed: int = 0) -> dict[str, Any]:
    """All metrics as the ``xserve evaluate --json`` object (see the module docstring)."""
    rng = np.random.default_rng(seed)
    ranker.eval()
    towers.eval()
    prior = PriorCounts(data.entries)
    r_model, r_pop, r_rnd = _ranker_metrics(data, ranker, prior, rng)
    t_model, t_pop, t_rnd = _retrieval_metrics(data, towers, rng)
    n_model, n_pop, n_rnd = _next_engagement_metrics(data, ranker, prior, rng)
    return {
        "ranker": r_model or {"auc": {}, "rce": {}},
        "retrieval": t_model,
        "next_engagement": n_model,
        "baselines": {
            "popularity": {"ranker": r_pop or {"auc": {}, "rce": {}}, "retrieval": t_pop, "next_engagement": n_pop},
            "random": {"ranker": r_rnd or {"auc": {}, "rce": {}}, "retrieval": t_rnd, "next_engagement": n_rnd},
        },
    }

