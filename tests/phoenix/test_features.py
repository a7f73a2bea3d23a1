import numpy as np

from tests.phoenix.factories import tiny_phoenix
from xserve.phoenix.model.embeddings import PhoenixHasher
from xserve.phoenix.model.features import Featurizer, action_bits, multi_hot
from xserve.schema import ACTION_INDEX, Action, HistoryItem, ProductSurface, RankCandidate, RankRequest

HOUR = 3_600_000


def test_multi_hot_and_bits_agree():
    bits = action_bits({Action.FAVORITE, Action.REPORT})
    row = multi_hot(np.array([bits, 0]))
    assert row.shape == (2, 20) and row[0].sum() == 2 and row[1].sum() == 0
    assert row[0, ACTION_INDEX[Action.REPORT]] == 1 and row[0, ACTION_INDEX[Action.FAVORITE]] == 1


def test_from_requests_orders_truncates_and_pads():
    cfg = tiny_phoenix(history_len=3)
    f = Featurizer(cfg, PhoenixHasher(cfg))
    items = [HistoryItem(post_id=p, author_id=9, actions=frozenset({Action.FAVORITE}), timestamp_ms=ts)
             for p, ts in ((11, 40), (12, 10), (13, 30), (14, 20))]
    reqs = [
        RankRequest(user_id=5, history=tuple(items), now_ms=10 * HOUR,
                    candidates=(RankCandidate(post_id=21, author_id=3, created_at_ms=10 * HOUR - 2 * HOUR),
                                RankCandidate(post_id=22, author_id=3, created_at_ms=None,
                                              product_surface=ProductSurface.SEARCH))),
        RankRequest(user_id=6, history=(), candidates=(RankCandidate(post_id=23, author_id=4),)),
    ]
    ctx, cand = f.from_requests(reqs)
    h = f.hasher
    # newest 3 of 4, oldest first: 14 (t=20), 13 (t=30), 11 (t=40)
    assert np.array_equal(ctx.post_hashes[0].numpy(), h("post", np.array([14, 13, 11])))
    assert ctx.lengths.tolist() == [3, 0]
    assert cand.post_hashes.shape == (2, 2, 2) and cand.valid.tolist() == [[True, True], [True, False]]
    assert cand.age_bucket.tolist() == [[3, 0], [0, 0]]  # 2 h old -> bucket 3; unknown -> 0
    assert cand.surface[0].tolist() == [int(ProductSurface.HOME_FOR_YOU), int(ProductSurface.SEARCH)]
    assert ctx.actions[0, :, ACTION_INDEX[Action.FAVORITE]].tolist() == [1, 1, 1]


def test_content_ids_are_the_first_distinct_case_folded_tokens_of_a_text():
    from xserve.phoenix.model.features import content_ids

    ids = content_ids("Rust rust RUST, #rust and Go! #golang", 3)
    assert ids.dtype == np.int64 and len(ids) == 3
    assert ids[0] == content_ids("rust", 3)[0] and len(set(ids.tolist())) == 3  # rust, and, go
    assert ids[2] == content_ids("go", 1)[0] and 0 not in ids
    assert (content_ids("", 4) == 0).all() and (content_ids(None, 4) == 0).all()
    assert content_ids("#spoilers", 2)[0] == content_ids("Spoilers", 2)[0]  # a hashtag is its word (the tokenizer's)
    assert (content_ids("a b", 4)[2:] == 0).all()
