"""The post-content input and the content-match term learn what a reader reads about (issue 15).

A log where the topic of a post shows only in its text (many authors with two posts each, so ids say little
in two epochs): readers favorite posts on their topic. Trained with the texts, the ranker must tell a reader's
favorites from the rest on held-out days; trained on the same log without texts, it cannot as well."""

from __future__ import annotations

import torch

from tests.phoenix.factories import engagement_table, tiny_config, validation_batch
from xserve.phoenix.training.metrics import auc
from xserve.phoenix.training.train import deterministic, prepare, train_ranker
from xserve.schema import ACTION_INDEX, Action

CONFIG = tiny_config(epochs=2)
_FAV = ACTION_INDEX[Action.FAVORITE]


def _favorite_auc(eng, posts) -> float:
    with deterministic(CONFIG.train.seed, 1) as rng:
        data = prepare(eng, posts, CONFIG)
        model, _ = train_ranker(data, rng)
    ctx, cand, labels, _ = validation_batch(data)
    with torch.no_grad():
        logits = model.score_candidates(model.encode_context(ctx), cand).logits[..., _FAV].numpy()
    valid = cand.valid.numpy() & (labels.sum(-1) > 0)  # the engaged candidates: favorite or only clicked
    return auc(labels[..., _FAV][valid], logits[valid])


def test_the_text_teaches_the_ranker_a_readers_topic():
    eng, posts = engagement_table(n_users=60, n_authors=150, posts_per_author=2, per_user=40, seed=5, texts=True)
    with_text = _favorite_auc(eng, posts)
    without = _favorite_auc(eng, posts.drop_columns(["text"]))
    assert with_text > 0.8 and with_text > without + 0.1, (with_text, without)
