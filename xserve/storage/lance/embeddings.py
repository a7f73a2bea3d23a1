"""Post-embedding tables in LanceDB: one table per shard, one directory per model version.

Layout (``docs/retrieval.md`` has the longer story)::

    <data_dir>/embeddings/CURRENT                 {"version": ..., "num_shards": ..., "dim": ...}
    <data_dir>/embeddings/v<version>/MANIFEST.json  written last: the version is complete
    <data_dir>/embeddings/v<version>/shard<i>.lance columns post_id, author_id, created_at_ms,
                                                  in_reply_to_post_id (0 = none), model_version,
                                                  vector (fixed-size list float32, D)

A shard is one LanceDB table, vectors unit-norm, searched with squared-L2
distance (``score = 1 - d/2`` is then the cosine similarity).

**Index choice (measured, 250k clustered 128-d vectors per shard, the size of
one of four shards of 1M).** IVF_PQ (256 partitions, 16 sub-vectors) needs a
refine step to reach recall@100 0.98, and refine reads full vectors row by row:
at k = 1000 that costs 50-100 ms per shard and recall@1000 stays at 0.56-0.76.
IVF_FLAT stores full vectors inside each partition, so the distances it returns
are exact and recall is limited only by how many partitions are probed; at 128-d
a probed partition of ~1000 rows is a 0.5 MB sequential read: nprobes 40 gave
recall@100 0.99 and recall@1000 0.78 per shard at p50 6 ms for k = 1000 (the
4-shard fan-out now probes 20: its merged recall@100 stays 0.99). An
IVF_HNSW_SQ build had not finished after two minutes for 250k rows (226 s for
1M, ``docs/reference.md`` §9.4), too slow for an index that follows a moving window,
so it was not pursued. ``docs/retrieval.md`` has the sweep, and
``benchmarks/bench_retrieval.py`` re-measures recall against brute force. The
default is IVF_FLAT; the index kind is a config field, so IVF_PQ stays one
setting away for corpora whose full vectors no longer fit the page cache.

**Recency rule.** A selective ``where created_at_ms >= cutoff`` prefilter makes
IVF search walk partitions that are mostly filtered out, and recall collapsed in
measurement (0.70 keeping 5 %, 0.32 keeping 0.5 %). Per-day tables would keep
the rule exact but triple the searches per query (a 48 h window spans three
days), and a search has a fixed cost of several ms here. So the index holds
only the serving window: :class:`~xserve.retrieval.shard.ShardSearcher` refuses
writes older than the max age, its maintenance pass deletes rows that aged out
(:meth:`EmbeddingShard.trim`), and its search post-filters the few stale rows
left between passes from a slightly larger k (recall measured 0.996@100 with
9 % stale rows). The reference does the same: its retrieval corpus is the
recent window, not the whole history.

**Query path (measured, docs/retrieval.md "Latency").** A search selects only
``post_id`` and ``_distance``: the other small columns come from the shard's
in-memory :class:`~xserve.storage.lance.row_meta.RowMeta`, since LanceDB reads each
selected column of each returned row at a random place (half the cost of a
400-row search). ``search_async`` runs the query on the caller's event loop so
a fan-out awaits all shards from one loop; ``search`` runs the same coroutine
on LanceDB's background loop.

Only this module imports lancedb for embeddings. Not thread-safe for two
writers on one shard; reads may run concurrently with one writer (the
maintenance thread), which is how :class:`~xserve.retrieval.shard.ShardSearcher`
uses it.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from datetime import timedelta
from collections.abc import Callable
from pathlib import Path
from typing import Any

# lancedb and pyarrow are imported where a table is opened or written: a process that only reads the manifests
# (the Retrieval replica: which version is live, which towers made it) never loads them
import numpy as np

from xserve import clock
from xserve.config import RetrievalConfig
from xserve.storage.files import write_json_atomic
from xserve.storage.lance.row_meta import META_COLUMNS, RowMeta
from xserve.storage.layout import DataDirLayout
from xserve.storage.model_versions import VERSION_NAME_RE

__all__ = [
    "EmbeddingShard",
    "EmbeddingVersions",
    "VersionError",
    "VersionInfo",
    "embedding_schema",
]

_VERSION_RE = VERSION_NAME_RE  # one rule for model and embedding version names
_INDEX_NAME_RE = re.compile(r"^vector_ivf_(\d+)$")


class VersionError(ValueError):
    """A version name, directory or switch that cannot be used; the message says why."""


def embedding_schema(dim: int) -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("post_id", pa.int64(), nullable=False),
            pa.field("author_id", pa.int64(), nullable=False),
            pa.field("created_at_ms", pa.int64(), nullable=False),
            pa.field("in_reply_to_post_id", pa.int64(), nullable=False),  # 0 = not a reply (ids are never 0)
            pa.field("model_version", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),
        ]
    )


def _ids_sql(ids: np.ndarray) -> str:
    return ",".join(str(int(i)) for i in ids)


class EmbeddingShard:
    """One shard's LanceDB table: upsert, delete, trim, search, index maintenance.

    ``search`` returns NumPy arrays best first; all other methods take NumPy
    arrays of equal length. Vectors must be unit-norm float32 of width ``dim``.
    """

    def __init__(self, table: Any, dim: int, config: RetrievalConfig):
        self._table = table
        # the AsyncTable this LanceTable wraps (its sync methods are LOOP.run(self._table.<method>())):
        # the same handle, so async reads see this object's writes at once
        self._async_table = table._table
        self.dim = dim
        self.config = config
        self._trained = self._trained_rows()
        # RowMeta of this table, built on the first search (writers need none); _meta_lock orders its
        # build against writes, so a write lands either in the table it is read from or in the copy after
        self._meta: RowMeta | None = None
        self._meta_lock = threading.Lock()
        self.meta_misses = 0  # rows a search returned that the RowMeta lacked (deleted meanwhile): dropped

    # ------------------------------------------------------------------ open

    @classmethod
    def open(cls, version_dir: Path, shard: int, dim: int, config: RetrievalConfig, create: bool = False) -> EmbeddingShard:
        import lancedb

        db = lancedb.connect(str(version_dir))
        name = f"shard{shard}"
        if create:
            table = db.create_table(name, schema=embedding_schema(dim), exist_ok=True)
        else:
            try:
                table = db.open_table(name)
            except (FileNotFoundError, ValueError) as exc:
                raise VersionError(f"embedding shard {name} missing under {version_dir}: {exc}") from None
        width = table.schema.field("vector").type.list_size
        if width != dim:
            raise VersionError(f"shard {name} under {version_dir} holds {width}-d vectors, expected {dim}")
        return cls(table, dim, config)

    def __repr__(self) -> str:
        return f"EmbeddingShard({self._table.name}, rows={self.num_rows()}, index={self.config.index_type})"

    # ------------------------------------------------------------------ writes

    def _arrow(self, post_ids, author_ids, created_at_ms, vectors, model_version: str, replies=None) -> pa.Table:
        import pyarrow as pa

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n = len(post_ids)
        if vectors.shape != (n, self.dim):
            raise ValueError(f"vectors must have shape ({n}, {self.dim}), got {vectors.shape}")
        if not (len(author_ids) == len(created_at_ms) == n):
            raise ValueError("post_ids, author_ids and created_at_ms must have equal length")
        if not np.isfinite(vectors).all():
            raise ValueError("vectors must be finite")
        return pa.table(
            {
                "post_id": pa.array(np.asarray(post_ids, dtype=np.int64)),
                "author_id": pa.array(np.asarray(author_ids, dtype=np.int64)),
                "created_at_ms": pa.array(np.asarray(created_at_ms, dtype=np.int64)),
                "in_reply_to_post_id": pa.array(
                    np.zeros(n, np.int64) if replies is None else np.asarray(replies, dtype=np.int64)
                ),
                "model_version": pa.array([model_version] * n, pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), self.dim),
            },
            schema=embedding_schema(self.dim),
        )

    def append(self, post_ids, author_ids, created_at_ms, vectors, model_version: str = "", replies=None) -> int:
        """Plain append (backfill into a fresh table; the caller guarantees unique ids).

        ``replies`` is each post's ``in_reply_to_post_id`` (0 = none; None = no replies).
        """
        batch = self._arrow(post_ids, author_ids, created_at_ms, vectors, model_version, replies)
        if batch.num_rows:
            with self._meta_lock:
                self._meta_upsert(batch)
                self._table.add(batch)
        return batch.num_rows

    def upsert(self, post_ids, author_ids, created_at_ms, vectors, model_version: str = "", replies=None) -> int:
        """Insert or replace rows by ``post_id``; within the batch the last row of an id wins.

        LanceDB's ``merge_insert`` rejects a batch holding one key twice, so the
        batch is deduplicated first. Returns the number of rows written.
        """
        post_ids = np.asarray(post_ids, dtype=np.int64)
        if len(post_ids) == 0:
            return 0
        # last occurrence of each id: unique over the reversed array
        _, rev_first = np.unique(post_ids[::-1], return_index=True)
        keep = np.sort(len(post_ids) - 1 - rev_first)
        batch = self._arrow(
            post_ids[keep],
            np.asarray(author_ids)[keep],
            np.asarray(created_at_ms)[keep],
            np.asarray(vectors)[keep],
            model_version,
            None if replies is None else np.asarray(replies)[keep],
        )
        with self._meta_lock:
            self._meta_upsert(batch)  # before the table: a search never finds a row its RowMeta lacks
            (
                self._table.merge_insert("post_id")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute(batch)
            )
        return batch.num_rows

    def delete(self, post_ids: np.ndarray) -> None:
        post_ids = np.unique(np.asarray(post_ids, dtype=np.int64))
        if len(post_ids):
            with self._meta_lock:
                self._table.delete(f"post_id IN ({_ids_sql(post_ids)})")
                if self._meta is not None:  # after the table: a search meanwhile drops the row (a meta miss)
                    self._meta = self._meta.delete(post_ids)

    def trim(self, cutoff_ms: int) -> int:
        """Delete rows created before ``cutoff_ms``; returns how many were deleted."""
        before = self.num_rows()
        with self._meta_lock:
            self._table.delete(f"created_at_ms < {int(cutoff_ms)}")
            if self._meta is not None:
                self._meta = self._meta.trim(int(cutoff_ms))
        return before - self.num_rows()

    def _meta_upsert(self, batch: pa.Table) -> None:
        if self._meta is not None:
            self._meta = self._meta.upsert(batch["post_id"].to_numpy(), {c: batch[c].to_numpy() for c in META_COLUMNS})

    def _row_meta(self) -> RowMeta:
        meta = self._meta
        if meta is None:
            with self._meta_lock:
                if self._meta is None:
                    cols = self._table.search().select(["post_id", *META_COLUMNS]).limit(None).to_arrow()
                    self._meta = RowMeta.build(cols["post_id"].to_numpy(), {c: cols[c].to_numpy() for c in META_COLUMNS})
                meta = self._meta
        return meta

    # ------------------------------------------------------------------ reads

    def num_rows(self) -> int:
        return self._table.count_rows()

    def search(
        self,
        vector: np.ndarray,
        limit: int,
        nprobes: int | None = None,
        refine_factor: int | None = None,
        min_created_at_ms: int | None = None,
    ) -> dict[str, np.ndarray]:
        """ANN top-``limit`` by cosine; unindexed rows are flat-searched too.

        ``min_created_at_ms`` turns on LanceDB's ``where`` prefilter (the slow,
        low-recall path; see the module docstring). Returns arrays ``post_id``,
        ``author_id``, ``created_at_ms``, ``in_reply_to_post_id`` and ``score``
        (cosine), best first. The same query as :meth:`search_async`, run on
        LanceDB's background event loop (which is all its sync API does).
        """
        if self.config.row_meta_in_memory:
            self._row_meta()  # built here: building it reads the table through LOOP, which must not wait on itself
        from lancedb.background_loop import LOOP

        return LOOP.run(self.search_async(vector, limit, nprobes, refine_factor, min_created_at_ms))

    async def search_async(
        self,
        vector: np.ndarray,
        limit: int,
        nprobes: int | None = None,
        refine_factor: int | None = None,
        min_created_at_ms: int | None = None,
    ) -> dict[str, np.ndarray]:
        """:meth:`search` as a coroutine on the caller's event loop.

        A fan-out awaits every shard's search from one loop, instead of one
        sync call per thread that the sync API funnels through its one
        background loop anyway (measured at least as fast, docs/retrieval.md).
        """
        cfg = self.config
        from_meta = cfg.row_meta_in_memory
        q = self._async_table.query().nearest_to(np.asarray(vector, dtype=np.float32)).column("vector")
        q = q.distance_type("l2").limit(int(limit)).nprobes(int(nprobes or cfg.nprobes))
        q = q.select(["post_id", "_distance"] if from_meta else ["post_id", *META_COLUMNS, "_distance"])
        refine = cfg.refine_factor if refine_factor is None else refine_factor
        if refine and cfg.index_type == "IVF_PQ":
            q = q.refine_factor(int(refine))
        if cfg.index_type == "IVF_HNSW_SQ":
            q = q.ef(max(cfg.hnsw_ef, int(limit)))
        if min_created_at_ms is not None:
            q = q.where(f"created_at_ms >= {int(min_created_at_ms)}")  # a prefilter: the async API's default
        out = await q.to_arrow()
        post_ids = out["post_id"].to_numpy()
        score = (1.0 - out["_distance"].to_numpy() / 2.0).astype(np.float32)
        if not from_meta:
            return {"post_id": post_ids, **{c: out[c].to_numpy() for c in META_COLUMNS}, "score": score}
        found, cols = self._row_meta().lookup(post_ids)
        if not found.all():
            self.meta_misses += int((~found).sum())
            post_ids, score = post_ids[found], score[found]
        return {"post_id": post_ids, **cols, "score": score}

    def read_all(self, columns: list[str] | None = None) -> pa.Table:
        """Every row (oracles, tests, re-sharding); not for the query path."""
        return self._table.to_arrow() if columns is None else self._table.to_arrow().select(columns)

    # ------------------------------------------------------------------ index

    def _trained_rows(self) -> int:
        """Rows the vector index was trained on, kept in the index's name so it survives a reopen.

        ``optimize`` folds new rows into the trained partitions without moving
        them, so the retrain rule compares against this, not the indexed count.
        """
        for idx in self._table.list_indices():
            if "vector" in idx.columns:
                m = _INDEX_NAME_RE.match(idx.name)
                return int(m.group(1)) if m else 1
        return 0

    def num_unindexed_rows(self) -> int:
        for idx in self._table.list_indices():
            if "vector" in idx.columns:
                stats = self._table.index_stats(idx.name)
                return self.num_rows() if stats is None else int(stats.num_unindexed_rows)
        return self.num_rows()

    def has_index(self) -> bool:
        return any("vector" in idx.columns for idx in self._table.list_indices())

    def build_index(self) -> bool:
        """(Re)train the ANN index on every row; False when the table is too small to need one."""
        from lancedb.index import BTree, HnswSq, IvfFlat, IvfPq

        cfg = self.config
        rows = self.num_rows()
        if rows < cfg.index_min_rows:
            return False
        partitions = cfg.index_partitions or max(1, rows // cfg.rows_per_partition)
        if cfg.index_type == "IVF_FLAT":
            index: Any = IvfFlat(distance_type="l2", num_partitions=partitions)
        elif cfg.index_type == "IVF_PQ":
            index = IvfPq(distance_type="l2", num_partitions=partitions, num_sub_vectors=cfg.pq_sub_vectors or None)
        elif cfg.index_type == "IVF_HNSW_SQ":
            index = HnswSq(distance_type="l2", num_partitions=max(1, partitions // 64))
        else:  # load_config already refuses other names; a hand-built config gets the same message
            raise ValueError(f"retrieval.index_type must be IVF_FLAT, IVF_PQ or IVF_HNSW_SQ, got {cfg.index_type!r}")
        for idx in self._table.list_indices():  # the name changes with the trained size: drop the old one
            if "vector" in idx.columns and idx.name != f"vector_ivf_{rows}":
                self._table.drop_index(idx.name)
        self._table.create_index("vector", config=index, replace=True, name=f"vector_ivf_{rows}")
        # merge_insert joins on post_id and deletes filter on it: a BTREE makes both ~30 % faster
        self._table.create_index("post_id", config=BTree(), replace=True)
        self._trained = rows
        return True

    def optimize(self) -> None:
        """Compact small fragments and fold new rows into the existing index (no retrain)."""
        self._table.optimize(cleanup_older_than=timedelta(seconds=self.config.cleanup_older_than_s))

    def maintain(self, cutoff_ms: int | None) -> dict[str, int]:
        """One maintenance pass: trim aged-out rows, then retrain or optimise the index.

        Retrains when the table has grown ``reindex_growth``× since the index was
        trained (its partitions no longer fit the data), else optimises.
        """
        trimmed = self.trim(cutoff_ms) if cutoff_ms is not None else 0
        rows = self.num_rows()
        retrained = 0
        if not self.has_index() or rows >= self.config.reindex_growth * max(self._trained, 1):
            retrained = int(self.build_index())
        if not retrained and self.has_index():
            self.optimize()
        return {"trimmed": trimmed, "rows": rows, "retrained": retrained}


# --------------------------------------------------------------------------- versions


class VersionInfo(dict):
    """The parsed ``CURRENT`` / ``MANIFEST.json`` record (version, num_shards, dim, ...)."""

    @property
    def version(self) -> str:
        return self["version"]


class EmbeddingVersions:
    """The versioned directory of shard tables and the atomic ``CURRENT`` pointer.

    A version is written under ``v<version>/``, completed by writing its
    ``MANIFEST.json``, then made current by replacing ``CURRENT``. Serving only
    opens versions that ``CURRENT`` names, so it never sees a half-written one.
    """

    def __init__(self, data_dir: str | Path):
        self.layout = DataDirLayout(data_dir)
        self.root = self.layout.embeddings

    @staticmethod
    def check_name(version: str) -> str:
        if not isinstance(version, str) or not _VERSION_RE.match(version):
            raise VersionError(
                f"embedding version must match {_VERSION_RE.pattern} (letters, digits, '_', '.', '-'), got {version!r}"
            )
        return version

    def version_dir(self, version: str) -> Path:
        return self.layout.embedding_version(self.check_name(version))

    def current(self) -> VersionInfo | None:
        path = self.layout.current_embeddings
        try:
            return VersionInfo(json.loads(path.read_text()))
        except FileNotFoundError:
            return None

    def current_name(self) -> str | None:
        """The current version's name, or None before the first switch."""
        info = self.current()
        return None if info is None else info.version

    def shard_opener(self, shard: int, config: RetrievalConfig) -> Callable[[str], EmbeddingShard]:
        """``version → EmbeddingShard`` for one shard (what ``ShardSearcher`` takes)."""
        return lambda version: self.open_shard(version, shard, config)

    def manifest(self, version: str) -> VersionInfo | None:
        try:
            return VersionInfo(json.loads((self.version_dir(version) / "MANIFEST.json").read_text()))
        except FileNotFoundError:
            return None

    def list_versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name[1:] for p in self.root.iterdir() if p.is_dir() and p.name.startswith("v"))

    def begin(self, version: str) -> Path:
        """Start writing ``version``; a half-written directory left by a crash is discarded.

        Refuses a version that is complete (its manifest exists): pick a new name.
        """
        vdir = self.version_dir(version)
        if self.manifest(version) is not None:
            raise VersionError(f"embedding version {version} is already complete; choose a new version name")
        self.discard_incomplete(version)
        vdir.mkdir(parents=True)
        return vdir

    def discard_incomplete(self, version: str) -> bool:
        """Delete a version directory that has no manifest (a crashed write); True if one was removed."""
        vdir = self.version_dir(version)
        if vdir.exists() and self.manifest(version) is None:
            shutil.rmtree(vdir)
            return True
        return False

    def open_shard(self, version: str, shard: int, config: RetrievalConfig, create: bool = False) -> EmbeddingShard:
        info = self.manifest(version) if not create else None
        if not create and info is None:
            raise VersionError(f"embedding version {version} is not complete (no MANIFEST.json)")
        dim = config.embedding_dim if info is None else int(info["dim"])
        return EmbeddingShard.open(self.version_dir(version), shard, dim, config, create=create)

    def finish(self, version: str, num_shards: int, dim: int, **extra: Any) -> VersionInfo:
        """Mark ``version`` complete (after its tables and indexes are written)."""
        vdir = self.version_dir(version)
        missing = [i for i in range(num_shards) if not (vdir / f"shard{i}.lance").is_dir()]
        if missing:
            raise VersionError(f"embedding version {version} lacks shard tables {missing}")
        info = VersionInfo(version=version, num_shards=num_shards, dim=dim, finished_at_ms=clock.now_ms(), **extra)
        write_json_atomic(vdir / "MANIFEST.json", info)
        return info

    def switch(self, version: str) -> VersionInfo:
        """Point ``CURRENT`` at a complete version, atomically."""
        info = self.manifest(version)
        if info is None:
            raise VersionError(f"cannot switch to embedding version {version}: it is not complete")
        write_json_atomic(self.layout.current_embeddings, info)
        return info

    def prune(self, keep: int = 2) -> list[str]:
        """Delete complete versions beyond the current one and the ``keep - 1`` newest others.

        Incomplete directories are left alone: a backfill may be writing one.
        """
        cur = self.current()
        done = [v for v in self.list_versions() if self.manifest(v) is not None]
        done.sort(key=lambda v: self.manifest(v).get("finished_at_ms", 0), reverse=True)
        keep_set = set(done[: max(keep, 1)]) | ({cur.version} if cur else set())
        removed = [v for v in done if v not in keep_set]
        for v in removed:
            shutil.rmtree(self.version_dir(v), ignore_errors=True)
        return removed
