"""The narrow seams of retrieval: the two towers and one shard's vector table.

The towers come from ``xserve.phoenix`` (adapted in ``xserve.retrieval.towers``)
or from :class:`~xserve.synth.encoder.ClusteredEncoder`; the table is
:class:`xserve.storage.lance.embeddings.EmbeddingShard`. Retrieval code depends only
on these Protocols, so it never imports torch or lancedb.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from xserve.schema import RetrievalRequest

__all__ = ["PostEncoder", "ShardTable", "UserEncoder"]


class PostEncoder(Protocol):
    """The candidate tower."""

    def encode_posts(self, post_ids: np.ndarray, author_ids: np.ndarray) -> np.ndarray:
        """(N,) int64 ids → (N, D) float32 unit-norm vectors."""
        ...


class UserEncoder(Protocol):
    """The user tower."""

    def encode_users(self, requests: Sequence[RetrievalRequest]) -> np.ndarray:
        """B requests (user id + engagement history) → (B, D) float32 unit-norm vectors."""
        ...


class ShardTable(Protocol):
    """One shard's vector table (``EmbeddingShard`` satisfies it)."""

    def search(
        self, vector: np.ndarray, limit: int, nprobes: int | None = None, refine_factor: int | None = None,
        min_created_at_ms: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Top-``limit`` as arrays ``post_id``, ``author_id``, ``created_at_ms``, ``in_reply_to_post_id``
        (0 = none) and ``score``, best first."""
        ...

    async def search_async(
        self, vector: np.ndarray, limit: int, nprobes: int | None = None, refine_factor: int | None = None,
        min_created_at_ms: int | None = None,
    ) -> dict[str, np.ndarray]:
        """:meth:`search` as a coroutine on the caller's event loop (same rows)."""
        ...

    def upsert(self, post_ids, author_ids, created_at_ms, vectors, model_version: str = "", replies=None) -> int: ...

    def delete(self, post_ids: np.ndarray) -> None: ...

    def num_rows(self) -> int: ...

    def maintain(self, cutoff_ms: int | None) -> dict[str, int]: ...
