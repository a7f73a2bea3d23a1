"""An in-memory copy of a shard table's small columns, looked up by post id.

A vector search that returns ``k`` rows makes LanceDB read every selected
column of those rows at random places in the data files; measured on a 250k-row
shard at 400 rows, nprobes 20: 6.2 ms with the four id/time columns, 3.8 ms
with ``post_id`` alone (``docs/retrieval.md``). So
:class:`~xserve.storage.lance.embeddings.EmbeddingShard` searches for ``post_id`` and
``_distance`` only and reads ``author_id``, ``created_at_ms`` and
``in_reply_to_post_id`` from a :class:`RowMeta` it keeps in step with its own
writes (24 bytes a row plus the id: ~8 MB for a 250k-row shard).

:class:`RowMeta` is immutable: a write builds a new one and swaps it in with one
attribute assignment, so concurrent readers see the old or the new copy whole.
"""

from __future__ import annotations

import numpy as np

__all__ = ["META_COLUMNS", "RowMeta"]

META_COLUMNS = ("author_id", "created_at_ms", "in_reply_to_post_id")


class RowMeta:
    """``post_id → (author_id, created_at_ms, in_reply_to_post_id)``, as sorted NumPy arrays.

    ``ids`` is sorted and unique (int64, shape (N,)); ``cols`` holds the
    :data:`META_COLUMNS` arrays in the same order (int64, shape (N,) each).
    """

    __slots__ = ("ids", "cols")

    def __init__(self, ids: np.ndarray, cols: dict[str, np.ndarray]):
        self.ids = ids
        self.cols = cols

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"RowMeta(rows={len(self)})"

    @classmethod
    def build(cls, post_ids: np.ndarray, cols: dict[str, np.ndarray]) -> RowMeta:
        """From unsorted columns; for a repeated id the last row wins (as in an upsert)."""
        post_ids = np.asarray(post_ids, dtype=np.int64)
        _, rev_first = np.unique(post_ids[::-1], return_index=True)  # sorted unique ids, last occurrence
        keep = len(post_ids) - 1 - rev_first
        return cls(post_ids[keep], {c: np.asarray(cols[c], dtype=np.int64)[keep] for c in META_COLUMNS})

    def upsert(self, post_ids: np.ndarray, cols: dict[str, np.ndarray]) -> RowMeta:
        """A copy with these rows inserted or replaced (last row of a repeated id wins)."""
        new = RowMeta.build(post_ids, cols)
        if not len(new):
            return self
        old = np.ones(len(self.ids), dtype=bool)
        old[self._positions(new.ids)[0]] = False  # rows the new ones replace
        ids = np.concatenate([self.ids[old], new.ids])
        order = np.argsort(ids, kind="stable")
        return RowMeta(ids[order], {c: np.concatenate([self.cols[c][old], new.cols[c]])[order] for c in META_COLUMNS})

    def without(self, keep: np.ndarray) -> RowMeta:
        """A copy keeping the rows where the boolean mask ``keep`` (shape (N,)) is True."""
        return self if keep.all() else RowMeta(self.ids[keep], {c: v[keep] for c, v in self.cols.items()})

    def delete(self, post_ids: np.ndarray) -> RowMeta:
        return self.without(~np.isin(self.ids, np.asarray(post_ids, dtype=np.int64)))

    def trim(self, cutoff_ms: int) -> RowMeta:
        return self.without(self.cols["created_at_ms"] >= cutoff_ms)

    def _positions(self, post_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions in ``ids`` of the ids present, boolean mask over ``post_ids`` of which are present)."""
        pos = np.searchsorted(self.ids, post_ids)
        found = pos < len(self.ids)
        found[found] = self.ids[pos[found]] == post_ids[found]
        return pos[found], found

    def lookup(self, post_ids: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(mask over ``post_ids`` of the ids held, the :data:`META_COLUMNS` of those ids in order)."""
        pos, found = self._positions(np.asarray(post_ids, dtype=np.int64))
        return found, {c: v[pos] for c, v in self.cols.items()}
