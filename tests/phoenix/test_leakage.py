"""No label leakage: a missing creation time is "unknown" for every candidate, positive or negative, in
training and when served; evaluation uses the split recorded at training; statistics that initialise
the model come from training rows only."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from tests.phoenix.factories import engagement_table, tiny_config, validation_batch
from xserve.phoenix.training.data import RankerExamples
from xserve.phoenix.training.metrics import auc
from xserve.phoenix.training.train import deterministic, initial_head_bias, prepare, train_ranker
from xserve.schema import ACTIONS, RankCandidate, RankRequest

CONFIG = tiny_config(epochs=2)


@pytest.fixture(scope="module")
def log():
    return engagement_table(n_users=40, per_user=30, seed=3)


def _without_created(eng: pa.Table, how: str) -> pa.Table:
    i = eng.column_names.index("post_created_at_ms")
    if how == "dropped":
        return eng.remove_column(i)
    return eng.set_column(i, "post_created_at_ms", pa.nulls(eng.num_rows, pa.int64()))  # as an import stores it


def _validation_auc(eng: pa.Table, posts: pa.Table) -> dict[str, float]:
    with deterministic(CONFIG.train.seed, 1) as rng:
        data = prepare(eng, posts, CONFIG)
        model, _ = train_ranker(data, rng)
    with torch.no_grad():
        return _ranker_auc(data, model)


def _ranker_auc(data, model) -> dict[str, float]:
    ctx, cand, labels, _ = validation_batch(data)
    probs = torch.sigmoid(model.score_candidates(model.encode_context(ctx), cand).logits).numpy()
    valid = cand.valid.numpy()
    y, p = labels[valid], probs[valid]
    return {a.value: auc(y[:, i], p[:, i]) for i, a in enumerate(ACTIONS) if 0 < y[:, i].sum() < len(y)}


def test_dropping_creation_times_does_not_raise_validation_auc(log):
    """With creation times dropped, positives used to get age bucket 0 and sampled negatives their posts-table
    age: "bucket 0 = engaged" lifted every AUC towards 1. Now every age is unknown alike."""
    eng, posts = log
    with_times = _validation_auc(eng, posts)
    without = _validation_auc(_without_created(eng, "dropped"), posts)
    assert set(without) == set(with_times) == {"favorite", "click", "not_interested"}
    for action in with_times:
        assert without[action] <= with_times[action] + 0.03, (action, without, with_times)


@pytest.mark.parametrize("how", ["dropped", "null"])
def test_without_creation_times_every_age_is_unknown_in_training_and_serving(log, how):
    eng, posts = log
    data = prepare(_without_created(eng, how), posts, CONFIG)
    assert data.entries.created_share == 0.0 and not data.featurizer.config.post_age
    assert (data.entries.created == 0).all() and (data.corpus.known_created_ms == 0).all()
    assert (data.corpus.created > 0).all()  # the corpus is still ordered by a time (posts table, first engagement)
    ex = RankerExamples.build(data.entries, data.corpus, split_ms=data.split_ms, validation=False, num_pos=4, num_neg=4,
                              history_len=8, max_age_ms=CONFIG.mixer.max_post_age_ms, rng=np.random.default_rng(0))
    _, cand, _, _ = ex.batch(np.arange(len(ex)), data.featurizer)
    assert int(cand.age_bucket.max()) == 0
    # served: the model's featurizer shows a catalog post with a creation time as "unknown" too
    request = RankRequest(1, (), (RankCandidate(1, 2, created_at_ms=1_000), RankCandidate(3, 4)), now_ms=7_200_000)
    _, served = data.featurizer.from_requests([request])
    assert served.age_bucket.tolist() == [[0, 0]]
    # with creation times, the same request has a known age
    _, known = prepare(eng, posts, CONFIG).featurizer.from_requests([request])
    assert known.age_bucket.tolist() == [[2, 0]]


def test_a_partly_timed_log_gives_each_post_one_age_positive_or_negative(log):
    """Posts whose rows carry no creation time are unknown as positives and as sampled negatives alike; so are
    posts only the posts table holds (known times only among never-engaged posts would mark the negatives)."""
    eng, posts = log
    created = eng.column("post_created_at_ms").to_numpy()
    untimed = eng.column("post_id").to_numpy() % 2 == 0
    partial = eng.set_column(eng.column_names.index("post_created_at_ms"), "post_created_at_ms",
                             pa.array(created, mask=untimed))
    data = prepare(partial, posts, CONFIG)
    assert data.featurizer.config.post_age
    c = data.corpus
    in_log = np.isin(c.post, data.entries.post)
    assert ((c.known_created_ms == 0) == ((c.post % 2 == 0) | ~in_log)).all() and (~in_log).any()
    at = np.searchsorted(c.post, data.entries.post, sorter=np.argsort(c.post))
    assert (data.entries.created == c.known_created_ms[np.argsort(c.post)[at]]).all()


def test_the_head_bias_comes_from_training_rows_only(log):
    eng, posts = log
    data = prepare(eng, posts, CONFIG)
    before = initial_head_bias(data)
    data.entries.bits[data.entries.ts >= data.split_ms] = (1 << len(ACTIONS)) - 1  # every action in validation
    assert np.array_equal(initial_head_bias(data), before)
    data.entries.bits[data.entries.ts < data.split_ms] = (1 << len(ACTIONS)) - 1
    assert not np.array_equal(initial_head_bias(data), before)


def test_a_recorded_split_is_used_as_given(log):
    eng, posts = log
    trained = prepare(eng, posts, CONFIG)
    other = tiny_config(validation_fraction=0.5)
    assert prepare(eng, posts, other).split_ms != trained.split_ms
    assert prepare(eng, posts, other, trained.featurizer, split_ms=trained.split_ms).split_ms == trained.split_ms
