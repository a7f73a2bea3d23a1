"""A deterministic, clustered stand-in for the two towers (tests, benchmarks, demos).

Trained two-tower embeddings are clustered: posts of one author or topic sit
near each other on the unit sphere, and a user sits near the posts they engage
with. :class:`ClusteredEncoder` reproduces that shape without a model so the
index can be tuned and tested on realistic geometry (ANN recall on uniformly
random vectors is far worse and misleading, see ``docs/reference.md`` §9.4):

* ``num_topics`` topic centres, seeded random unit vectors;
* a post's topic is its author's topic (``author_id`` hashed) with probability
  ``1 - off_topic``, else a topic hashed from the post id;
* its vector is ``normalise(centre + noise · ε)``, where ``ε`` is a standard
  normal vector derived from the post id alone (splitmix64 + Box–Muller), so the
  same id always gets the same vector on any machine or process;
* a user is the normalised mean of their history's post vectors (or a topic
  hashed from the user id when the history is empty).

It satisfies both :class:`~xserve.retrieval.protocols.PostEncoder` and
:class:`~xserve.retrieval.protocols.UserEncoder`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xserve.schema import RetrievalRequest
from xserve.sharding import splitmix64_array

__all__ = ["ClusteredEncoder"]

def _unit_uniform(bits: np.ndarray) -> np.ndarray:
    """uint64 → float64 uniform in (0, 1) from the top 53 bits."""
    return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


class ClusteredEncoder:
    """Clustered unit vectors keyed by id; see the module docstring for the recipe."""

    def __init__(self, dim: int = 128, num_topics: int = 1000, noise: float = 1.0, off_topic: float = 0.2, seed: int = 0):
        if dim < 2 or dim % 2:
            raise ValueError(f"dim must be an even number >= 2, got {dim}")
        if num_topics < 1:
            raise ValueError(f"num_topics must be >= 1, got {num_topics}")
        self.dim = dim
        self.num_topics = num_topics
        self.noise = noise
        self.off_topic = off_topic
        self.seed = seed
        self.centres = _normalise(np.random.default_rng(seed).standard_normal((num_topics, dim)))  # (T, D)
        self._salt = np.uint64(splitmix64_array(np.array([seed], dtype=np.uint64))[0])

    def __repr__(self) -> str:
        return f"ClusteredEncoder(dim={self.dim}, num_topics={self.num_topics}, noise={self.noise}, seed={self.seed})"

    def _hash(self, ids: np.ndarray, lane: int) -> np.ndarray:
        with np.errstate(over="ignore"):
            return splitmix64_array(ids.astype(np.uint64) * np.uint64(0x100000001B3) ^ self._salt ^ np.uint64(lane))

    def topics(self, post_ids: np.ndarray, author_ids: np.ndarray) -> np.ndarray:
        """Topic index of each post, shape (N,)."""
        author_topic = self._hash(author_ids, 1) % np.uint64(self.num_topics)
        post_topic = self._hash(post_ids, 2) % np.uint64(self.num_topics)
        off = _unit_uniform(self._hash(post_ids, 3)) < self.off_topic
        return np.where(off, post_topic, author_topic).astype(np.int64)

    def _gaussian(self, post_ids: np.ndarray) -> np.ndarray:
        """A standard normal (N, D) matrix that depends only on each row's id."""
        half = self.dim // 2
        lanes = np.arange(half, dtype=np.uint64)
        base = post_ids.astype(np.uint64)[:, None] * np.uint64(2 * half)
        u1 = _unit_uniform(self._hash(base + 2 * lanes, 4))  # (N, D/2)
        u2 = _unit_uniform(self._hash(base + 2 * lanes + np.uint64(1), 5))
        r = np.sqrt(-2.0 * np.log(u1))
        return np.concatenate([r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)], axis=1)  # (N, D)

    def encode_posts(self, post_ids: np.ndarray, author_ids: np.ndarray) -> np.ndarray:
        """(N,) ids → (N, D) float32 unit vectors."""
        post_ids = np.asarray(post_ids, dtype=np.int64)
        author_ids = np.asarray(author_ids, dtype=np.int64)
        if post_ids.shape != author_ids.shape or post_ids.ndim != 1:
            raise ValueError(f"post_ids and author_ids must be 1-d of equal length, got {post_ids.shape} and {author_ids.shape}")
        if len(post_ids) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        centre = self.centres[self.topics(post_ids, author_ids)]  # (N, D)
        eps = self._gaussian(post_ids) / np.sqrt(self.dim)  # (N, D), expected norm 1
        return _normalise(centre + self.noise * eps)

    def encode_users(self, requests: Sequence[RetrievalRequest]) -> np.ndarray:
        """One unit vector per request, shape (B, D): the mean of its history's post vectors."""
        out = np.empty((len(requests), self.dim), dtype=np.float32)
        for i, req in enumerate(requests):
            if req.history:
                posts = np.array([h.post_id for h in req.history], dtype=np.int64)
                authors = np.array([h.author_id for h in req.history], dtype=np.int64)
                out[i] = _normalise(self.encode_posts(posts, authors).mean(axis=0))
            else:
                topic = int(self._hash(np.array([req.user_id]), 6)[0] % np.uint64(self.num_topics))
                out[i] = self.centres[topic]
        return out
