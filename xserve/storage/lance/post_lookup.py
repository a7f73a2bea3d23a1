"""Posts by id from the data directory's posts table (the hydration catalog's read-through)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import lancedb

from xserve.schema import Post
from xserve.storage.lance.tables import table_to_posts

__all__ = ["PostTableLookup"]


class PostTableLookup:
    """``lookup(ids) -> [Post]`` for the ids present in ``<data_dir>/posts.lance`` (one scan per call).

    ``recent(min_created_at_ms)`` reads every post created at or after a time,
    to warm the hydration cache with the posts young enough to be candidates.
    """

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self._db = lancedb.connect(str(data_dir))
        self._table = None

    def _posts(self):
        if self._table is None:
            try:
                self._table = self._db.open_table("posts")
            except (FileNotFoundError, ValueError):
                return None
        return self._table

    def _where(self, where: str) -> list[Post]:
        table = self._posts()
        if table is None:
            return []
        return table_to_posts(table.search().where(where).limit(None).to_arrow())

    def __call__(self, post_ids: Sequence[int]) -> list[Post]:
        if not post_ids:
            return []
        return self._where(f"post_id IN ({','.join(str(int(i)) for i in post_ids)})")

    def recent(self, min_created_at_ms: int) -> list[Post]:
        return self._where(f"created_at_ms >= {int(min_created_at_ms)}")
