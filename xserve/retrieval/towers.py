"""Adapter from the Phoenix two towers to retrieval's ``UserEncoder`` / ``PostEncoder`` Protocols.

Imported only when ``RetrievalConfig.towers_checkpoint`` is set (it needs torch
and ``xserve.phoenix``). The towers come from ``xserve.phoenix.model.checkpoint.load_towers``:
``PhoenixTowers.user_embeddings(ContextBatch) → (B, D)`` and
``candidate_embeddings(post_hashes, author_hashes) → (N, D)``, both unit norm;
the checkpoint's ``Featurizer`` turns ids and histories into hashed inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from xserve.phoenix.model.checkpoint import load_towers
from xserve.schema import RetrievalRequest

__all__ = ["TowerEncoder", "load_tower_encoders"]


class TowerEncoder:
    """Both towers of one checkpoint, NumPy in and out, inference mode, batches of any size."""

    def __init__(self, loaded, chunk: int = 8192):
        self.model = loaded.model.eval()
        self.featurizer = loaded.featurizer
        self.version = loaded.version
        self.dim = loaded.config.emb_dim
        self.chunk = chunk  # candidate rows per forward pass (bounds peak memory in backfills)

    def __repr__(self) -> str:
        return f"TowerEncoder({self.version}, dim={self.dim})"

    @torch.inference_mode()
    def encode_posts(self, post_ids: np.ndarray, author_ids: np.ndarray) -> np.ndarray:
        post_ids = np.asarray(post_ids, dtype=np.int64)
        author_ids = np.asarray(author_ids, dtype=np.int64)
        out = np.empty((len(post_ids), self.dim), dtype=np.float32)
        hasher = self.featurizer.hasher
        for i in range(0, len(post_ids), self.chunk):
            ph = torch.from_numpy(hasher("post", post_ids[i : i + self.chunk]))  # (n, Hp)
            ah = torch.from_numpy(hasher("author", author_ids[i : i + self.chunk]))  # (n, Ha)
            out[i : i + self.chunk] = self.model.candidate_embeddings(ph, ah).float().numpy()
        return out

    @torch.inference_mode()
    def encode_users(self, requests: Sequence[RetrievalRequest]) -> np.ndarray:
        f = self.featurizer
        history = f.history_arrays([r.history for r in requests], [r.now_ms for r in requests])  # 5 × (B, S), (B, S, M)
        user_ids = np.array([r.user_id for r in requests], dtype=np.int64)
        ctx = f.context(user_ids, *history, user_context=f.user_contexts([r.context for r in requests]))
        return self.model.user_embeddings(ctx).float().numpy()  # (B, D)


def load_tower_encoders(path: str, dim: int) -> tuple[TowerEncoder, TowerEncoder, str]:
    """(user encoder, post encoder, model version) from a Phoenix towers checkpoint."""
    enc = TowerEncoder(load_towers(path))
    if enc.dim != dim:
        raise ValueError(f"retrieval.embedding_dim is {dim} but the towers checkpoint {path} produces {enc.dim}-d vectors")
    return enc, enc, enc.version
