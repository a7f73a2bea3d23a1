"""Small factory helpers for phoenix tests: configs, random batches, a tiny latent-interest engagement log."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from xserve.config import PhoenixConfig, TrainConfig, XServeConfig
from xserve.phoenix.model.ranker import NUM_ACTIONS, CandidateBatch, ContextBatch
from xserve.schema import ACTIONS, Action

T0 = 1_700_000_000_000
HOUR = 3_600_000


def tiny_phoenix(**kw) -> PhoenixConfig:
    base = dict(emb_dim=32, num_layers=2, num_q_heads=4, num_kv_heads=2, key_size=8, history_len=16,
                user_vocab=257, post_vocab=1031, author_vocab=131)
    return PhoenixConfig(**{**base, **kw})


def tiny_config(**train) -> XServeConfig:
    t = dict(epochs=2, batch_size=32, ranker_positives=4, ranker_negatives=4, tower_positives=2,
             ranker_examples_per_epoch=0, tower_examples_per_epoch=0, warmup_steps=5, learning_rate=3e-3,
             eval_max_queries=200, eval_sampled_candidates=20)
    return XServeConfig(phoenix=tiny_phoenix(), train=TrainConfig(**{**t, **train}))


def random_batch(b: int = 3, s: int = 6, c: int = 5, hist_lens=None, seed: int = 0,
                 dtype=torch.float64) -> tuple[ContextBatch, CandidateBatch]:
    """Random hashed inputs; row i has ``hist_lens[i]`` valid history entries (default: random)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, hi=100):
        return torch.randint(1, hi, shape, generator=g)

    post = r(b, s, 2)
    lens = hist_lens if hist_lens is not None else torch.randint(0, s + 1, (b,), generator=g).tolist()
    for i, n in enumerate(lens):
        post[i, n:] = 0
    actions = (torch.rand(b, s, NUM_ACTIONS, generator=g) < 0.3).to(dtype)
    ctx = ContextBatch(r(b, 2), post, r(b, s, 2), actions, r(b, s, hi=8))
    cand = CandidateBatch(r(b, c, 2), r(b, c, 2), r(b, c, hi=8), r(b, c, hi=82))
    # post texts of up to 4 tokens (row 0 = no token), drawn last so the other inputs keep their draws
    ctx.content, cand.content = r(b, s, 4) * (r(b, s, 4, hi=3) > 1), r(b, c, 4) * (r(b, c, 4, hi=3) > 1)
    return ctx, cand


def engagement_table(n_users: int = 60, n_authors: int = 12, posts_per_author: int = 15, per_user: int = 40,
                     seed: int = 0, topics: int = 3, texts: bool = False) -> tuple[pa.Table, pa.Table]:
    """A log from a known latent model: users see popular authors and authors on their topic more, favorite
    posts of authors on their topic and mark others not-interested. Returns (engagements by time, posts);
    with ``texts`` the posts carry a text naming their author's topic among two random filler words."""
    rng = np.random.default_rng(seed)
    user_topic = rng.integers(0, topics, n_users)
    author_topic = rng.integers(0, topics, n_authors)
    n_posts = n_authors * posts_per_author
    post_author = np.repeat(np.arange(n_authors), posts_per_author)
    post_created = T0 + rng.integers(0, 48 * HOUR, n_posts)
    author_pop = 1.0 / np.arange(1, n_authors + 1) ** 1.2  # popular authors get most impressions
    rows = []
    for u in range(n_users):
        ts = np.sort(T0 + 2 * HOUR + rng.integers(0, 60 * HOUR, per_user))
        for t in ts:
            live = np.flatnonzero(post_created <= t)
            w = author_pop[post_author[live]] * np.where(author_topic[post_author[live]] == user_topic[u], 3.0, 1.0)
            p = int(rng.choice(live, p=w / w.sum()))
            match = author_topic[post_author[p]] == user_topic[u]
            acts = [Action.CLICK]
            if match and rng.random() < 0.8:
                acts.append(Action.FAVORITE)
            if not match and rng.random() < 0.5:
                acts.append(Action.NOT_INTERESTED)
            for k, a in enumerate(acts):
                rows.append((u + 1, p + 1, post_author[p] + 1, a.value, int(t) + k, 1500 if a is Action.CLICK else 0,
                             1, int(post_created[p])))
    rows.sort(key=lambda r: r[4])
    cols = list(zip(*rows))
    eng = pa.table({
        "user_id": pa.array(cols[0], pa.int64()), "post_id": pa.array(cols[1], pa.int64()),
        "author_id": pa.array(cols[2], pa.int64()), "action": pa.array(cols[3], pa.string()),
        "timestamp_ms": pa.array(cols[4], pa.int64()), "dwell_ms": pa.array(cols[5], pa.int64()),
        "product_surface": pa.array(cols[6], pa.int32()), "post_created_at_ms": pa.array(cols[7], pa.int64()),
    })
    posts = pa.table({"post_id": np.arange(1, n_posts + 1, dtype=np.int64),
                      "author_id": (post_author + 1).astype(np.int64), "created_at_ms": post_created.astype(np.int64)})
    if texts:
        filler = rng.integers(0, 50, (n_posts, 2))
        posts = posts.append_column("text", pa.array(
            [f"w{a} #topic{author_topic[post_author[i]]} w{b}" for i, (a, b) in enumerate(filler)]))
    return eng, posts


def validation_batch(data, seed: int = 1):
    """The held-out examples of prepared ``data`` (after the split it recorded) as one batch: (context,
    candidates, labels, dwell), built as ``xserve evaluate`` builds them."""
    from xserve.phoenix.training.train import ranker_examples

    ex = ranker_examples(data, np.random.default_rng(seed), validation=True)
    return ex.batch(np.arange(len(ex)), data.featurizer)


assert len(ACTIONS) == NUM_ACTIONS
