"""Factories for ranker-serving tests: a tiny ranker, its runner, and RankRequests."""

from __future__ import annotations

import numpy as np
import torch

from xserve.config import PhoenixConfig, RankerServingConfig
from xserve.phoenix.model.embeddings import PhoenixHasher
from xserve.phoenix.model.features import Featurizer
from xserve.phoenix.model.ranker import PhoenixRanker
from xserve.phoenix.serving.runner import RankerRunner
from xserve.schema import ACTIONS, HistoryItem, ProductSurface, RankCandidate, RankRequest

NOW = 1_700_000_000_000
HOUR = 3_600_000


def tiny_ranker_config(**kw) -> PhoenixConfig:
    base = dict(emb_dim=32, num_layers=2, num_q_heads=4, num_kv_heads=2, key_size=8, history_len=40,
                user_vocab=257, post_vocab=1031, author_vocab=131)
    return PhoenixConfig(**{**base, **kw})


def tiny_model(seed: int = 0, **kw) -> PhoenixRanker:
    torch.manual_seed(seed)
    model = PhoenixRanker(tiny_ranker_config(**kw)).eval()
    torch.nn.init.normal_(model.match.head.weight)  # zero in a fresh model: the oracles here cover the text term too
    return model


_WORDS = ("rust", "goal", "vote", "jazz", "rain", "code", "match", "song")


def text(rng: np.random.Generator) -> str:
    """A post text of 0 to 4 words (a fifth have none)."""
    return " ".join(rng.choice(_WORDS, size=int(rng.integers(0, 5)))) if rng.random() > 0.2 else ""


def make_runner(model: PhoenixRanker | None = None, **serving) -> RankerRunner:
    model = model if model is not None else tiny_model()
    base = dict(device="cpu", block_size=4, chunk_size=8, rows_per_forward=2, kv_cache_bytes=1 << 20)  # CPU: the oracles run there
    return RankerRunner(model, Featurizer(model.config, PhoenixHasher(model.config)),
                        RankerServingConfig(**{**base, **serving}), version="test")


def history(n: int, seed: int, user: int = 1) -> tuple[HistoryItem, ...]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        acts = frozenset(a for a in ACTIONS if rng.random() < 0.2)
        out.append(HistoryItem(post_id=int(rng.integers(1, 10**9)), author_id=int(rng.integers(1, 10**6)),
                               actions=acts, timestamp_ms=NOW - (n - i) * 60_000 - user,
                               product_surface=ProductSurface(int(rng.integers(0, 8))), text=text(rng)))
    return tuple(out)


def candidates(n: int, seed: int) -> tuple[RankCandidate, ...]:
    rng = np.random.default_rng(seed + 10_000)
    return tuple(
        RankCandidate(post_id=int(rng.integers(1, 10**9)), author_id=int(rng.integers(1, 10**6)),
                      created_at_ms=None if i % 7 == 0 else NOW - int(rng.integers(0, 100 * HOUR)),
                      product_surface=ProductSurface(int(rng.integers(0, 8))), text=text(rng))
        for i in range(n)
    )


def make_request(user: int = 1, n_history: int = 10, n_candidates: int = 20, seed: int = 0,
                 hist: tuple[HistoryItem, ...] | None = None) -> RankRequest:
    return RankRequest(user_id=user, history=hist if hist is not None else history(n_history, seed, user),
                       candidates=candidates(n_candidates, seed), now_ms=NOW)
