"""Raw ids and schema records → the ranker's and towers' input tensors.

Everything here is vectorised numpy over whole batches: ids are hashed with the
model's ``PhoenixHasher``, action sets become multi-hot rows in ``ACTIONS``
order, post ages become the reference's age buckets. Id 0 means padding
everywhere; valid history entries come first in each row, padding after.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from xserve.clock import HOUR_MS
from xserve.config import PhoenixConfig
from xserve.phoenix.model.embeddings import PhoenixHasher
from xserve.phoenix.model.ranker import NUM_ACTIONS, CandidateBatch, ContextBatch
from xserve.schema import ACTION_INDEX, HistoryItem, RankCandidate, RankRequest

__all__ = ["Featurizer", "action_bits", "age_buckets", "multi_hot"]

_BIT_VALUES = (1 << np.arange(NUM_ACTIONS)).astype(np.int64)


def multi_hot(bits: np.ndarray) -> np.ndarray:
    """Action bitmasks ``(...)`` (bit i = ``ACTIONS[i]``) → float32 multi-hot ``(..., A)``."""
    return ((np.asarray(bits, np.int64)[..., None] & _BIT_VALUES) != 0).astype(np.float32)


def action_bits(actions: "frozenset | set | Sequence") -> int:
    """A set of ``Action`` → its bitmask."""
    out = 0
    for a in actions:
        out |= 1 << ACTION_INDEX[a]
    return out


def age_buckets(created_at_ms: np.ndarray, now_ms: np.ndarray | int, num_buckets: int) -> np.ndarray:
    """``docs/reference.md`` §6.7: ``floor(age_min/60)+1`` (= whole hours + 1), overflow bucket ``num_buckets−1``,
    0 when the creation time is unknown (≤ 0) or in the future."""
    created = np.asarray(created_at_ms, np.int64)
    age = np.asarray(now_ms, np.int64) - created
    bucket = np.minimum(age // HOUR_MS + 1, num_buckets - 1)
    return np.where((created > 0) & (age >= 0), bucket, 0).astype(np.int64)


class Featurizer:
    """Builds ``ContextBatch`` / ``CandidateBatch`` from id arrays with one model's hashes."""

    def __init__(self, config: PhoenixConfig, hasher: PhoenixHasher) -> None:
        self.config = config
        self.hasher = hasher

    def _surface(self, surface: np.ndarray) -> torch.Tensor:
        s = np.asarray(surface, np.int64)
        return torch.from_numpy(np.where((s >= 0) & (s < self.config.product_surface_vocab), s, 0))  # unknown = 0

    def context(self, user_ids: np.ndarray, post_ids: np.ndarray, author_ids: np.ndarray,
                bits: np.ndarray, surface: np.ndarray) -> ContextBatch:
        """``user_ids (B,)``; history ``(B, S)`` arrays with post id 0 for padding (after the valid entries)."""
        post_ids = np.asarray(post_ids, np.int64)
        pad = post_ids == 0
        return ContextBatch(
            user_hashes=torch.from_numpy(self.hasher("user", np.asarray(user_ids, np.int64))),
            post_hashes=torch.from_numpy(self.hasher("post", post_ids)),
            author_hashes=torch.from_numpy(self.hasher("author", np.where(pad, 0, author_ids))),
            actions=torch.from_numpy(multi_hot(np.where(pad, 0, bits))),
            surface=self._surface(np.where(pad, 0, surface)),
        )

    def candidates(self, post_ids: np.ndarray, author_ids: np.ndarray, surface: np.ndarray,
                   age_bucket: np.ndarray) -> CandidateBatch:
        """Candidate ``(B, C)`` arrays; post id 0 marks a padding slot. A model trained without creation
        times (``post_age`` off) sees every age as unknown (0), as it did in training."""
        post_ids = np.asarray(post_ids, np.int64)
        pad = post_ids == 0
        bucket = np.asarray(age_bucket, np.int64) if self.config.post_age else np.zeros(post_ids.shape, np.int64)
        return CandidateBatch(
            post_hashes=torch.from_numpy(self.hasher("post", post_ids)),
            author_hashes=torch.from_numpy(self.hasher("author", np.where(pad, 0, author_ids))),
            surface=self._surface(np.where(pad, 0, surface)),
            age_bucket=torch.from_numpy(np.where((bucket >= 0) & (bucket < self.config.age_buckets) & ~pad, bucket, 0)),
        )

    def history_arrays(self, histories: Sequence[Sequence[HistoryItem]]) -> tuple[np.ndarray, ...]:
        """Newest ``history_len`` items of each history, oldest first, padded to the longest → 4 ``(B, S)`` arrays."""
        keep = [sorted(h, key=lambda it: it.timestamp_ms)[-self.config.history_len :] for h in histories]
        s = max([len(h) for h in keep] + [1])
        out = [np.zeros((len(keep), s), np.int64) for _ in range(4)]
        for i, items in enumerate(keep):
            for j, it in enumerate(items):
                out[0][i, j], out[1][i, j] = it.post_id, it.author_id
                out[2][i, j], out[3][i, j] = action_bits(it.actions), int(it.product_surface)
        return tuple(out)

    def from_requests(self, requests: Sequence[RankRequest]) -> tuple[ContextBatch, CandidateBatch]:
        """A batch of ``RankRequest`` → (context, candidates); candidate slots padded to the longest request."""
        posts, authors, bits, surfaces = self.history_arrays([r.history for r in requests])
        ctx = self.context(np.array([r.user_id for r in requests], np.int64), posts, authors, bits, surfaces)
        c = max([len(r.candidates) for r in requests] + [1])
        cand = np.zeros((4, len(requests), c), np.int64)
        for i, r in enumerate(requests):
            for j, rc in enumerate(r.candidates):
                cand[:, i, j] = self._candidate_row(rc, r.now_ms)
        return ctx, self.candidates(cand[0], cand[1], cand[2], cand[3])

    def _candidate_row(self, c: RankCandidate, now_ms: int) -> tuple[int, int, int, int]:
        created = 0 if c.created_at_ms is None or now_ms <= 0 else c.created_at_ms
        bucket = int(age_buckets(np.array(created), now_ms, self.config.age_buckets))
        return c.post_id, c.author_id, int(c.product_surface), bucket
