import numpy as np
import pyarrow as pa

from tests.phoenix.factories import engagement_table
from xserve.phoenix.training.data import (
    NEGATIVE_MASK,
    POSITIVE_MASK,
    PostCorpus,
    RankerExamples,
    TowerExamples,
    aggregate,
    split_time,
)
from xserve.phoenix.model.features import age_buckets
from xserve.schema import ACTION_INDEX, Action

W = 300_000


def _log(rows):
    cols = list(zip(*rows))
    return pa.table({"user_id": list(cols[0]), "post_id": list(cols[1]), "author_id": list(cols[2]),
                     "action": list(cols[3]), "timestamp_ms": list(cols[4]), "dwell_ms": list(cols[5])})


def bit(*actions):
    return sum(1 << ACTION_INDEX[a] for a in actions)


def test_aggregation_by_hand():
    e = aggregate(_log([
        (1, 10, 7, "favorite", 1_000, 0),
        (1, 10, 7, "click", 201_000, 0),  # 200 s later: same entry
        (1, 10, 7, "reply", 601_000, 0),  # 400 s after the last action: a new entry
        (1, 11, 8, "dwell", 5_000, 3_000),
        (2, 10, 7, "favorite", 2_000, 0),
    ]), W)
    assert e.user.tolist() == [1, 1, 1, 2]
    assert e.post.tolist() == [11, 10, 10, 10]  # user 1 in time order (entry time = its latest action)
    assert e.ts.tolist() == [5_000, 201_000, 601_000, 2_000]
    assert e.bits.tolist() == [bit(Action.DWELL), bit(Action.FAVORITE, Action.CLICK), bit(Action.REPLY),
                               bit(Action.FAVORITE)]
    assert e.dwell_ms.tolist() == [3_000, 0, 0, 0]
    assert e.starts.tolist() == [0, 3] and e.ends.tolist() == [3, 4]
    assert split_time(e, 0.5) == 2_000 + 299_500


def test_age_buckets_follow_the_reference():
    hour = 3_600_000
    created = np.array([0, 1_000, 1_000, 1_000, 1_000, 1_000])
    now = np.array([5, 1_000, 1_000 + hour - 1, 1_000 + hour, 1_000 + 80 * hour, 999])
    assert age_buckets(created, now, 82).tolist() == [0, 1, 1, 2, 81, 0]  # unknown, <1 h, 1 h, ≥80 h, future


def test_ranker_examples_respect_time_and_users():
    eng, posts = engagement_table(n_users=30, per_user=30, seed=1)
    e = aggregate(eng, W)
    corpus = PostCorpus.build(e, posts)
    split = split_time(e, 0.2)
    owner = e.row_user()
    for validation in (False, True):
        ex = RankerExamples.build(e, corpus, split_ms=split, validation=validation, num_pos=4, num_neg=3,
                                  history_len=8, max_age_ms=48 * 3_600_000, rng=np.random.default_rng(0))
        assert len(ex) > 0
        for i in range(len(ex)):
            hist = np.arange(ex.hist_start[i], ex.hist_start[i] + ex.hist_len[i])
            pos = np.arange(ex.pos_start[i], ex.pos_start[i] + ex.pos_len[i])
            assert 1 <= len(pos) <= 4 and len(hist) <= 8
            assert len({*owner[hist], *owner[pos]}) == 1  # one user
            assert (hist < pos.min()).all()
            assert ((e.ts[pos] >= split) if validation else (e.ts[pos] < split)).all()
            refs = ex.neg_ref[i]
            assert ((refs >= pos.min()) & (refs <= pos.max())).all()
            got = ex.neg_post[i][ex.neg_post[i] >= 0]
            assert (corpus.created[got] <= e.ts[refs][ex.neg_post[i] >= 0]).all()
    # a batch: positives carry their actions, negatives all-zero labels, histories trimmed to the longest
    from tests.phoenix.factories import tiny_phoenix
    from xserve.phoenix.model.embeddings import PhoenixHasher
    from xserve.phoenix.model.features import Featurizer, multi_hot

    rows = np.arange(min(5, len(ex)))
    ctx, cand, labels, _ = ex.batch(rows, Featurizer(tiny_phoenix(), PhoenixHasher(tiny_phoenix())))
    assert ctx.post_hashes.shape[1] == max(1, ex.hist_len[rows].max()) and cand.post_hashes.shape[1] == 7
    assert np.array_equal(labels[0, : ex.pos_len[0]], multi_hot(e.bits[ex.pos_start[0] : ex.pos_start[0] + ex.pos_len[0]]))
    assert labels[:, 4:].sum() == 0
    assert (ctx.lengths.numpy() == ex.hist_len[rows]).all()


def test_tower_examples_target_positive_entries_after_the_history():
    eng, _ = engagement_table(n_users=30, per_user=30, seed=2)
    e = aggregate(eng, W)
    ex = TowerExamples.build(e, split_ms=split_time(e, 0.2), validation=False, num_pos=2, history_len=8,
                             rng=np.random.default_rng(0))
    assert len(ex) > 0
    pos = ex.pos_idx[ex.pos_idx >= 0]
    assert ((e.bits[pos] & POSITIVE_MASK) != 0).all() and ((e.bits[pos] & NEGATIVE_MASK) == 0).all()
    assert (ex.pos_idx[:, 0] >= ex.hist_start + ex.hist_len).all()
    assert (ex.hist_len >= 1).all()
