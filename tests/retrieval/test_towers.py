"""The Phoenix towers adapter (runs once the phoenix package is merged; skipped before)."""

from __future__ import annotations

import numpy as np
import pytest

from xserve.phoenix.model import checkpoint

from xserve.config import PhoenixConfig, RetrievalConfig  # noqa: E402
from xserve.retrieval.encoders import load_encoders  # noqa: E402
from xserve.schema import Action, HistoryItem, RetrievalRequest  # noqa: E402


def _tiny_checkpoint(tmp_path):
    from xserve.phoenix.model.embeddings import PhoenixHasher
    from xserve.phoenix.model.towers import PhoenixTowers

    cfg = PhoenixConfig(emb_dim=16, num_layers=1, num_q_heads=2, num_kv_heads=1, key_size=8, history_len=8,
                        user_vocab=101, post_vocab=1009, author_vocab=101)
    path = tmp_path / "towers.pt"
    checkpoint.save_checkpoint(path, "towers", PhoenixTowers(cfg), PhoenixHasher(cfg), metrics={})
    return path


def test_tower_encoders_satisfy_the_protocols(tmp_path):
    path = _tiny_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="embedding_dim"):
        load_encoders(RetrievalConfig(towers_checkpoint=str(path), embedding_dim=32))
    users, posts, version = load_encoders(RetrievalConfig(towers_checkpoint=str(path), embedding_dim=16))
    assert version.startswith("towers-")
    v = posts.encode_posts(np.arange(1, 21), np.arange(1, 21) % 5 + 1)
    assert v.shape == (20, 16) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(posts.encode_posts(np.arange(1, 6), np.arange(1, 6) % 5 + 1), v[:5], atol=1e-6)

    def req(uid, n):
        hist = tuple(HistoryItem(100 + j, 3 + j, frozenset({Action.FAVORITE}), 1_000 + j) for j in range(n))
        return RetrievalRequest(user_id=uid, history=hist, max_results=10)

    batch = users.encode_users([req(1, 3), req(2, 5), req(3, 0)])
    assert batch.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    for i, r in enumerate([req(1, 3), req(2, 5), req(3, 0)]):  # batched (padded) == one at a time
        np.testing.assert_allclose(users.encode_users([r])[0], batch[i], atol=1e-5)
