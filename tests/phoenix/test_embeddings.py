import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.phoenix.factories import tiny_phoenix
from xserve.config import PhoenixConfig
from xserve.phoenix.model.embeddings import HASH_MODULUS, HashConstants, HashEmbedding, PhoenixHasher, hash_ids


def test_hash_matches_the_formula_by_hand():
    # h(id) = ((id*scale + bias) mod P) mod (vocab-1) + 1
    assert hash_ids(np.array([5]), (3,), (7,), vocab=11).tolist() == [[((5 * 3 + 7) % HASH_MODULUS) % 10 + 1]]
    assert hash_ids(np.array([5]), (3,), (7,), vocab=11).tolist() == [[3]]
    big = 2**62 + 12345
    expect = ((big * 874926073 + 864930864) % HASH_MODULUS) % 100_002 + 1  # Python ints: no overflow
    assert PhoenixHasher(PhoenixConfig())("user", np.array([big]))[0, 0] == expect


def test_id_zero_is_padding_and_others_are_in_range():
    h = PhoenixHasher(tiny_phoenix())
    out = h("post", np.array([[0, 1, 2], [HASH_MODULUS, 2**63 - 1, 77]]))
    assert out.shape == (2, 3, 2)
    assert (out[0, 0] == 0).all()
    rest = out.reshape(-1, 2)[1:]
    assert (rest >= 1).all() and (rest <= tiny_phoenix().post_vocab - 1).all()


@settings(max_examples=30)
@given(st.lists(st.integers(0, 2**63 - 1), min_size=1, max_size=20))
def test_hash_is_deterministic_and_numpy_equals_torch(ids):
    h = PhoenixHasher(PhoenixConfig())
    a = h("author", np.array(ids, np.int64))
    assert np.array_equal(a, PhoenixHasher(PhoenixConfig())("author", np.array(ids, np.int64)))
    assert np.array_equal(a, h("author", torch.tensor(ids, dtype=torch.int64)).numpy())
    expect = [[0] * 2 if i == 0 else [((i * s + b) % HASH_MODULUS) % (PhoenixConfig().author_vocab - 1) + 1
               for s, b in zip(h.constants.scales["author"], h.constants.biases["author"], strict=True)] for i in ids]
    assert a.tolist() == expect


def test_hash_constants_round_trip_and_counts_follow_config():
    cfg = tiny_phoenix(num_post_hashes=3)
    c = HashConstants.default(cfg)
    assert len(c.scales["post"]) == 3 and len(c.scales["user"]) == 2
    assert HashConstants.from_dict(c.to_dict()) == c
    assert PhoenixHasher(cfg)("post", np.array([9])).shape == (1, 3)


def test_distinct_ids_rarely_collide_in_every_hash():
    h = PhoenixHasher(PhoenixConfig())
    rows = h("post", np.arange(1, 50_001))
    assert len({tuple(r) for r in rows.tolist()}) == 50_000


def test_padding_row_is_zero():
    e = HashEmbedding(10, 4, init_std=1.0)
    assert torch.equal(e(torch.tensor([[0, 0]])), torch.zeros(1, 2, 4))


def test_every_default_hash_spreads_sequential_ids_like_a_random_one():
    """Ids come in runs (users 1..U, a world's posts 10⁹ + i): each hash column of every kind must put a run on
    about as many rows as a random function would (a multiplicative hash with an unlucky scale put 200,000
    consecutive post ids on 30,000 rows)."""
    config = PhoenixConfig()
    hasher = PhoenixHasher(config, HashConstants.default(PhoenixConfig(num_user_hashes=8, num_post_hashes=8,
                                                                       num_author_hashes=8)))
    runs = {"user": (1, (10_000, 100_000, 1_000_000)), "author": (1, (10_000, 100_000, 1_000_000)),
            "post": (1_000_000_000, (30_000, 200_000, 1_000_000))}
    for kind, (start, sizes) in runs.items():
        vocab = hasher.vocab[kind]
        for n in sizes:
            rows = hasher(kind, np.arange(start, start + n, dtype=np.int64))
            random_rows = vocab * (1 - np.exp(-n / vocab))  # expected distinct rows of a random function
            for j in range(rows.shape[1]):
                distinct = len(np.unique(rows[:, j]))
                assert distinct >= 0.95 * min(random_rows, n), (kind, n, j, distinct, random_rows)
