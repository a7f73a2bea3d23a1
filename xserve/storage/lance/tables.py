"""The data directory: durable LanceDB tables of posts, users, edges and engagements.

One :class:`DataDir` wraps one directory. It is the only code in xserve that
touches LanceDB or pyarrow-level storage; everything above it gets
``pyarrow.Table`` columns (or NumPy arrays via :func:`table_to_numpy`).

The tables are ``DIR/{posts,users,edges,engagements}.lance`` (POSTS_SCHEMA, USERS_SCHEMA,
EDGES_SCHEMA, ENGAGEMENTS_SCHEMA), beside ``meta.json`` and, for synthetic worlds,
``ground_truth.npz``; every path is in :mod:`xserve.storage.layout`.

The directory is also a LanceDB database (``lancedb.connect(DIR)``), so other
parts (post embeddings, the event log) add their own ``*.lance`` tables beside
these without clashing.

Stable API (other packages depend on it)::

    dd = DataDir(path)                       # creates the directory if needed
    dd.write_posts(data, mode="append")      # also write_users / write_edges / write_engagements
    dd.read_posts(columns=None)              # -> pa.Table, insertion order
    dd.read_users(columns=None)              # -> pa.Table, insertion order
    dd.read_edges(kind=None, columns=None)   # -> pa.Table, insertion order, optionally one kind
    dd.read_engagements(columns=None)        # -> pa.Table sorted by timestamp_ms (stable)
    dd.read_engagement_arrays(columns=None)  # -> dict of NumPy arrays; "action" as int8 ACTION_INDEX
    dd.count(table) / dd.counts()            # row counts, cheap (manifest only)
    dd.has_world()                           # posts and engagements both non-empty
    dd.meta() / dd.update_meta(**fields)     # meta.json (+ live "counts")
    dd.write_ground_truth(arrays) / dd.read_ground_truth()

``data`` for a write is a ``pa.Table``, a ``pa.RecordBatch``, an iterable of
either, or a ``dict`` of columns. It is conformed to the table's schema: columns
are reordered and cast, optional columns that are absent are filled with their
default (null, ``""``, ``0``, ``False``, ``[]``), extra columns and a missing
required column are errors (:class:`DataDirError` naming the column). Modes:

* ``"append"``: add the rows (one commit, streamed from an iterable);
* ``"overwrite"``: replace the table's contents (one commit);
* ``"upsert"``: ``merge_insert`` on the table's key; a row whose key exists
  replaces it, others are inserted (the batch is deduplicated first, last row
  per key wins) - idempotent;
* ``"insert_new"``: ``merge_insert`` inserting only rows whose key is absent
  (first row per key wins); existing rows are left untouched - idempotent.

Keys (``TABLE_KEYS``): posts ``post_id``; users ``user_id``; edges
``(user_id, target_id, kind)``; engagements ``(user_id, post_id, action, timestamp_ms)``.

A write is durable when it returns: LanceDB commits it atomically (a new
manifest version) and, with ``fsync=True``, the files it created are fsynced.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from xserve.schema import ACTIONS, Engagement, Media, MediaKind, Post
from xserve.storage.files import fsync_path
from xserve.storage.layout import DataDirLayout

__all__ = [
    "EDGES_SCHEMA",
    "EDGE_KINDS",
    "ENGAGEMENTS_SCHEMA",
    "POSTS_SCHEMA",
    "SCHEMA_VERSION",
    "TABLES",
    "TABLE_KEYS",
    "USERS_SCHEMA",
    "DataDir",
    "DataDirError",
    "WriteMode",
    "engagements_to_table",
    "posts_to_table",
    "table_to_engagements",
    "table_to_numpy",
    "table_to_posts",
]

SCHEMA_VERSION = 1  # bump when a table schema changes incompatibly

WriteMode = Literal["append", "overwrite", "upsert", "insert_new"]
_MODES = ("append", "overwrite", "upsert", "insert_new")

EDGE_KINDS: tuple[str, ...] = ("follow", "block", "mute", "subscribe")  # edge.user_id -> edge.target_id


def _f(name: str, type_: pa.DataType, nullable: bool = False, doc: str = "") -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"doc": doc} if doc else None)


POSTS_SCHEMA = pa.schema(
    [
        _f("post_id", pa.int64(), doc="positive id, unique"),
        _f("author_id", pa.int64(), doc="user id of the author"),
        _f("created_at_ms", pa.int64(), doc="ms since epoch"),
        _f("text", pa.string(), doc="post text ('' for reposts)"),
        _f("in_reply_to_post_id", pa.int64(), True, "parent post of a reply"),
        _f("in_reply_to_user_id", pa.int64(), True, "author of the parent post"),
        _f("repost_of_post_id", pa.int64(), True, "original post of a repost"),
        _f("repost_of_user_id", pa.int64(), True, "author of the original"),
        _f("quote_of_post_id", pa.int64(), True, "quoted post"),
        _f("conversation_id", pa.int64(), True, "thread root; null = the post is its own root"),
        _f("video_duration_ms", pa.int64(), True, "first video's duration; null = no video"),
        _f("has_photo", pa.bool_(), doc="has at least one photo"),
        _f("subscription_only", pa.bool_(), doc="visible to the author's subscribers only"),
        _f("labels", pa.list_(pa.string()), doc="VisibilityLabel values"),
        _f("has_link", pa.bool_(), doc="carries an outbound link (marked at creation)"),
    ]
)

USERS_SCHEMA = pa.schema(
    [
        _f("user_id", pa.int64(), doc="positive id, unique"),
        _f("screen_name", pa.string(), doc="handle ('' when unknown, e.g. imported)"),
        _f("followers_count", pa.int64(), doc="followers (0 when unknown)"),
        _f("created_at_ms", pa.int64(), doc="account creation, ms since epoch"),
        _f("country_code", pa.string(), doc="the user's usual request country ('' = unknown): a training context input"),
        _f("language_code", pa.string(), doc="the user's usual request language ('' = unknown)"),
        _f("client_app_id", pa.int64(), doc="the user's usual client app (0 = unknown)"),
        _f("topics", pa.list_(pa.string()), doc="declared interest topics"),
    ]
)

EDGES_SCHEMA = pa.schema(
    [
        _f("user_id", pa.int64(), doc="the acting user"),
        _f("target_id", pa.int64(), doc="the user acted on"),
        _f("kind", pa.string(), doc="one of EDGE_KINDS"),
        _f("created_at_ms", pa.int64(), doc="when the edge was made, ms since epoch"),
    ]
)

ENGAGEMENTS_SCHEMA = pa.schema(
    [
        _f("user_id", pa.int64(), doc="the acting user"),
        _f("post_id", pa.int64(), doc="the post acted on"),
        _f("author_id", pa.int64(), doc="author of the post"),
        _f("action", pa.string(), doc="an xserve.schema.Action value"),
        _f("timestamp_ms", pa.int64(), doc="when the action happened"),
        _f("dwell_ms", pa.int64(), doc="the action's duration in ms, 0 = none: the dwell, except on video_open (watch), "
           "profile_click (profile visit) and click (time on the opened post) rows"),
        _f("product_surface", pa.int32(), doc="xserve.schema.ProductSurface value"),
        _f("post_created_at_ms", pa.int64(), True, "the post's creation time, if known"),
        _f("prediction_request_id", pa.string(), True,
           "the served feed's request id the client sent back (the impression log's join key); null = none"),
    ]
)

TABLES: dict[str, pa.Schema] = {
    "posts": POSTS_SCHEMA,
    "users": USERS_SCHEMA,
    "edges": EDGES_SCHEMA,
    "engagements": ENGAGEMENTS_SCHEMA,
}

TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "posts": ("post_id",),
    "users": ("user_id",),
    "edges": ("user_id", "target_id", "kind"),
    "engagements": ("user_id", "post_id", "action", "timestamp_ms"),
}

# Value used for an absent non-nullable column that has a natural default.
_DEFAULTS: dict[str, Any] = {
    "text": "",
    "has_photo": False,
    "subscription_only": False,
    "labels": [],
    "dwell_ms": 0,
    "product_surface": 1,  # ProductSurface.HOME_FOR_YOU, the Engagement default
    "screen_name": "",
    "followers_count": 0,
    "has_link": False,
    "country_code": "",
    "language_code": "",
    "client_app_id": 0,
    "topics": [],
}



class DataDirError(ValueError):
    """Data that cannot be written or a directory that cannot be used; the message says why."""


# --------------------------------------------------------------------------- conforming input


def _conform(table: pa.Table, schema: pa.Schema, name: str) -> pa.Table:
    """Reorder, cast and default-fill ``table`` to ``schema``; raise on missing/extra columns."""
    extra = [c for c in table.column_names if schema.get_field_index(c) < 0]
    if extra:
        raise DataDirError(f"{name}: unknown column(s) {extra}; expected {schema.names}")
    columns = []
    for field in schema:
        if field.name in table.column_names:
            col = table.column(field.name)
            if not col.type.equals(field.type):
                try:
                    col = col.cast(field.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise DataDirError(
                        f"{name}.{field.name}: cannot convert {col.type} to {field.type}: {exc}"
                    ) from None
            if not field.nullable and col.null_count:
                if field.name not in _DEFAULTS:
                    raise DataDirError(f"{name}.{field.name}: {col.null_count} null value(s) in a required column")
                col = pc.fill_null(col, pa.scalar(_DEFAULTS[field.name], field.type))
        elif field.nullable:
            col = pa.nulls(table.num_rows, field.type)
        elif field.name in _DEFAULTS:
            col = pa.array([_DEFAULTS[field.name]] * table.num_rows, field.type)
        else:
            raise DataDirError(f"{name}: missing required column {field.name!r}")
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=schema)


def _as_tables(data: Any) -> Iterator[pa.Table]:
    if isinstance(data, pa.Table):
        yield data
    elif isinstance(data, pa.RecordBatch):
        yield pa.Table.from_batches([data])
    elif isinstance(data, Mapping):
        yield pa.table(dict(data))
    elif isinstance(data, Iterable) and not isinstance(data, (str, bytes)):
        for item in data:
            yield from _as_tables(item)
    else:
        raise DataDirError(
            f"cannot write {type(data).__name__}: give a pyarrow Table, RecordBatch(es) or a dict of columns"
        )


def _dedupe(table: pa.Table, keys: Sequence[str], keep: Literal["first", "last"]) -> pa.Table:
    """One row per key (merge_insert rejects a batch with repeated keys)."""
    if table.num_rows < 2:
        return table
    idx = pa.table({**{k: table.column(k) for k in keys}, "__row": pa.array(np.arange(table.num_rows))})
    agg = "min" if keep == "first" else "max"
    rows = idx.group_by(list(keys), use_threads=False).aggregate([("__row", agg)]).column(f"__row_{agg}")
    if len(rows) == table.num_rows:
        return table
    return table.take(np.sort(rows.to_numpy()))


_ALLOWED_VALUES: dict[tuple[str, str], tuple[pa.Array, str]] = {
    ("edges", "kind"): (pa.array(EDGE_KINDS), f"one of {EDGE_KINDS}"),
    ("engagements", "action"): (pa.array([str(a) for a in ACTIONS]), "an xserve.schema.Action value"),
}


def _check_values(name: str, table: pa.Table) -> pa.Table:
    """Reject a table whose enum-like string column holds a value outside its set."""
    for (table_name, column), (allowed, rule) in _ALLOWED_VALUES.items():
        if table_name == name:
            bad = pc.invert(pc.is_in(table.column(column), allowed))
            if pc.any(bad).as_py():
                example = pc.filter(table.column(column), bad)[0].as_py()
                raise DataDirError(f"{name}.{column}: {example!r} is not {rule}")
    return table


# --------------------------------------------------------------------------- record conversion


def posts_to_table(posts: Iterable[Post]) -> pa.Table:
    """``Post`` Structs -> a POSTS_SCHEMA table. Media is reduced to ``has_photo`` and the first video's duration."""
    posts = list(posts)
    cols: dict[str, list[Any]] = {f.name: [] for f in POSTS_SCHEMA}
    for p in posts:
        cols["post_id"].append(p.post_id)
        cols["author_id"].append(p.author_id)
        cols["created_at_ms"].append(p.created_at_ms)
        cols["text"].append(p.text)
        cols["in_reply_to_post_id"].append(p.in_reply_to_post_id)
        cols["in_reply_to_user_id"].append(p.in_reply_to_user_id)
        cols["repost_of_post_id"].append(p.repost_of_post_id)
        cols["repost_of_user_id"].append(p.repost_of_user_id)
        cols["quote_of_post_id"].append(p.quote_of_post_id)
        cols["conversation_id"].append(p.conversation_id)
        cols["video_duration_ms"].append(p.video_duration_ms())
        cols["has_photo"].append(any(m.kind is MediaKind.PHOTO for m in p.media))
        cols["subscription_only"].append(p.subscription_only)
        cols["labels"].append([str(label) for label in p.labels])
        cols["has_link"].append(p.has_link)
    return pa.table(cols, schema=POSTS_SCHEMA)


def table_to_posts(table: pa.Table) -> list[Post]:
    """A POSTS_SCHEMA table -> ``Post`` Structs (media as ``(photo?, video?)``)."""
    out = []
    for row in _conform(table, POSTS_SCHEMA, "posts").to_pylist():
        media = []
        if row.pop("has_photo"):
            media.append(Media(MediaKind.PHOTO))
        duration = row.pop("video_duration_ms")
        if duration is not None:
            media.append(Media(MediaKind.VIDEO, duration_ms=duration))
        row["labels"] = tuple(row["labels"])
        out.append(Post(**row, media=tuple(media)))
    return out


def engagements_to_table(engagements: Iterable[Engagement]) -> pa.Table:
    """``Engagement`` Structs -> an ENGAGEMENTS_SCHEMA table."""
    rows = [
        {
            "user_id": e.user_id,
            "post_id": e.post_id,
            "author_id": e.author_id,
            "action": str(e.action),
            "timestamp_ms": e.timestamp_ms,
            "dwell_ms": e.dwell_ms,
            "product_surface": int(e.product_surface),
            "post_created_at_ms": e.post_created_at_ms,
            "prediction_request_id": e.prediction_request_id,
        }
        for e in engagements
    ]
    return pa.Table.from_pylist(rows, schema=ENGAGEMENTS_SCHEMA)


def table_to_engagements(table: pa.Table) -> list[Engagement]:
    """An ENGAGEMENTS_SCHEMA table -> ``Engagement`` Structs."""
    return [Engagement(**row) for row in _conform(table, ENGAGEMENTS_SCHEMA, "engagements").to_pylist()]


def table_to_numpy(table: pa.Table) -> dict[str, np.ndarray]:
    """Columns as NumPy arrays (zero-copy where Arrow allows). Nullable ints become float64 with NaN for null
    unless they hold no nulls; string columns become object arrays."""
    out = {}
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_integer(col.type) and col.null_count:
            out[name] = col.to_numpy(zero_copy_only=False).astype(np.float64)
        else:
            out[name] = col.to_numpy(zero_copy_only=False)
    return out


# --------------------------------------------------------------------------- durability


def _fsync_changed(root: Path, since_ns: int) -> None:
    """fsync every file under ``root`` modified at or after ``since_ns``, then their directories."""
    dirs = {root}
    for dirpath, _, files in os.walk(root):
        for fname in files:
            p = Path(dirpath) / fname
            try:
                if p.stat().st_mtime_ns >= since_ns:
                    fsync_path(p)
                    dirs.add(Path(dirpath))
            except FileNotFoundError:  # a temp file Lance already renamed
                continue
    for d in dirs:
        fsync_path(d)
    fsync_path(root.parent)


# --------------------------------------------------------------------------- the data directory


class DataDir:
    """One data directory of LanceDB tables (see the module docstring for layout and contract)."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True, create: bool = True) -> None:
        self.path = Path(path)
        self.layout = DataDirLayout(self.path)
        if self.path.exists() and not self.path.is_dir():
            raise DataDirError(f"data directory {self.path} exists and is not a directory")
        if not self.path.exists():
            if not create:
                raise DataDirError(f"data directory {self.path} does not exist")
            self.path.mkdir(parents=True)
        self.fsync = fsync
        import lancedb  # here, not at module level: it takes seconds to import and schema users don't need it

        self._db = lancedb.connect(str(self.path))
        version = self._stored_meta().get("schema_version", SCHEMA_VERSION)
        if version > SCHEMA_VERSION:
            raise DataDirError(f"{self.path} has schema version {version}; this xserve reads up to {SCHEMA_VERSION}")

    def __repr__(self) -> str:
        return f"DataDir({str(self.path)!r})"

    # ---------------------------------------------------------------- tables

    def _table(self, name: str) -> Any | None:
        try:
            return self._db.open_table(name)
        except (FileNotFoundError, ValueError):
            return None

    def _table_or_create(self, name: str) -> Any:
        table = self._table(name)
        if table is None:
            return self._db.create_table(name, schema=TABLES[name], exist_ok=True)
        # a nullable column added to the schema after the table was written (engagements' prediction_request_id):
        # added to the stored table, all null, before a write that carries it
        added = [f for f in TABLES[name] if f.nullable and f.name not in table.schema.names]
        if added:
            table.add_columns(added)
        return table

    def _write(self, name: str, data: Any, mode: str) -> int:
        if mode not in _MODES:
            raise DataDirError(f"write mode must be one of {_MODES}, got {mode!r}")
        schema = TABLES[name]
        tables = (_check_values(name, _conform(t, schema, name)) for t in _as_tables(data))
        # File mtimes come from a coarse kernel clock that can lag time_ns(): a margin so no new file is missed.
        started_ns = time.time_ns() - 2_000_000_000
        table = self._table_or_create(name)
        if mode in ("append", "overwrite"):
            counted = _Counter(tables)
            reader = pa.RecordBatchReader.from_batches(schema, (b for t in counted for b in t.to_batches()))
            try:
                table.add(reader, mode=mode)
            except Exception:
                # Lance wraps errors raised while it pulls batches; surface ours as they were.
                if counted.error is not None:
                    raise counted.error from None
                raise
            written = counted.rows
        else:
            whole = pa.concat_tables([schema.empty_table(), *tables])
            whole = _dedupe(whole, TABLE_KEYS[name], "last" if mode == "upsert" else "first")
            written = 0
            if whole.num_rows:
                builder = table.merge_insert(list(TABLE_KEYS[name]))
                if mode == "upsert":
                    builder = builder.when_matched_update_all()
                result = builder.when_not_matched_insert_all().execute(whole)
                written = result.num_inserted_rows + result.num_updated_rows
        if self.fsync:
            _fsync_changed(self.layout.table(name), started_ns)
        return written

    def _read(self, name: str, columns: Sequence[str] | None = None, where: str | None = None) -> pa.Table:
        schema = TABLES[name]
        cols = list(schema.names if columns is None else columns)
        unknown = [c for c in cols if schema.get_field_index(c) < 0]
        if unknown:
            raise DataDirError(f"{name}: unknown column(s) {unknown}; expected {schema.names}")
        table = self._table(name)
        if table is None:
            return pa.schema([schema.field(c) for c in cols]).empty_table()
        stored = set(table.schema.names)
        query = table.search().select([c for c in cols if c in stored]).limit(None)
        if where is not None:
            query = query.where(where)
        out = query.to_arrow()
        for c in cols:  # a column added to the schema after the table was written: its default (issue 17's columns)
            if c not in stored:
                f = schema.field(c)
                out = out.append_column(f, pa.nulls(out.num_rows, f.type) if f.nullable
                                        else pa.array([_DEFAULTS[c]] * out.num_rows, f.type))
        # Lance may return looser nullability; give readers the documented schema.
        return out.select(cols).cast(pa.schema([schema.field(c) for c in cols]))

    def write_posts(self, data: Any, mode: WriteMode = "append") -> int:
        """Write posts (POSTS_SCHEMA); returns rows written (inserted + updated for the merge modes)."""
        return self._write("posts", data, mode)

    def write_users(self, data: Any, mode: WriteMode = "append") -> int:
        """Write users (USERS_SCHEMA); returns rows written."""
        return self._write("users", data, mode)

    def write_edges(self, data: Any, mode: WriteMode = "append") -> int:
        """Write graph edges (EDGES_SCHEMA, ``kind`` in EDGE_KINDS); returns rows written."""
        return self._write("edges", data, mode)

    def write_engagements(self, data: Any, mode: WriteMode = "append") -> int:
        """Write engagements (ENGAGEMENTS_SCHEMA, ``action`` an Action value); returns rows written."""
        return self._write("engagements", data, mode)

    def read_posts(self, columns: Sequence[str] | None = None) -> pa.Table:
        """All posts (the given columns, default all), in insertion order."""
        return self._read("posts", columns)

    def read_users(self, columns: Sequence[str] | None = None) -> pa.Table:
        """All users, in insertion order."""
        return self._read("users", columns)

    def read_edges(self, kind: str | None = None, columns: Sequence[str] | None = None) -> pa.Table:
        """All edges, or those of one ``kind`` (in EDGE_KINDS), in insertion order."""
        if kind is not None and kind not in EDGE_KINDS:
            raise DataDirError(f"edge kind must be one of {EDGE_KINDS}, got {kind!r}")
        return self._read("edges", columns, where=None if kind is None else f"kind = '{kind}'")

    def read_engagements(self, columns: Sequence[str] | None = None) -> pa.Table:
        """All engagements (the given columns), sorted by ``timestamp_ms`` (stable: ties keep insertion order)."""
        cols = list(ENGAGEMENTS_SCHEMA.names if columns is None else columns)
        table = self._read("engagements", cols if "timestamp_ms" in cols else [*cols, "timestamp_ms"])
        if table.num_rows > 1:
            ts = table.column("timestamp_ms").to_numpy()
            if np.any(ts[1:] < ts[:-1]):
                table = table.take(pa.array(np.argsort(ts, kind="stable")))
        return table.select(cols)

    def read_engagement_arrays(self, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """``read_engagements`` as NumPy arrays; ``action`` becomes int8 indices into ``xserve.schema.ACTIONS``."""
        table = self.read_engagements(columns)
        out = table_to_numpy(table.drop_columns(["action"]) if "action" in table.column_names else table)
        if "action" in table.column_names:
            codes = pc.index_in(table.column("action"), pa.array([str(a) for a in ACTIONS]))
            out["action"] = codes.to_numpy(zero_copy_only=False).astype(np.int8)
        return {c: out[c] for c in table.column_names}

    def set_post_labels(self, labels: Mapping[int, Sequence[str]]) -> int:
        """Replace the labels of the given posts that the table holds (``xserve compact`` folding label changes);
        returns rows updated."""
        table = self._table("posts")
        if table is None or not labels:
            return 0
        rows = self._read("posts", where=f"post_id IN ({','.join(str(int(i)) for i in labels)})")
        if not rows.num_rows:
            return 0
        new = pa.array([list(labels[pid]) for pid in rows.column("post_id").to_pylist()], POSTS_SCHEMA.field("labels").type)
        return self._write("posts", rows.set_column(rows.schema.get_field_index("labels"), POSTS_SCHEMA.field("labels"), new),
                           "upsert")

    def delete_posts(self, post_ids: Iterable[int]) -> int:
        """Delete the given posts (``xserve compact`` folding deletions); returns rows deleted."""
        ids = sorted({int(i) for i in post_ids})
        table = self._table("posts")
        if table is None or not ids:
            return 0
        started_ns = time.time_ns() - 2_000_000_000  # as in _write: coarse file mtimes
        before = table.count_rows()
        table.delete(f"post_id IN ({','.join(map(str, ids))})")
        if self.fsync:  # durable before the log records that held the deletions are dropped
            _fsync_changed(self.layout.table("posts"), started_ns)
        return before - table.count_rows()

    def delete_engagements_before(self, cutoff_ms: int) -> int:
        """Delete the engagements older than ``cutoff_ms`` (retention, ``xserve compact``); returns rows deleted."""
        table = self._table("engagements")
        if table is None:
            return 0
        before = table.count_rows()
        table.delete(f"timestamp_ms < {int(cutoff_ms)}")
        return before - table.count_rows()

    def reclaim(self, name: str) -> None:
        """Rewrite a table's fragments without its deleted rows and delete every older version's files.

        A LanceDB delete only marks rows, and each append or delete leaves a version whose files stay on disk:
        without this, retention frees no disk at all. Only for a table no other process reads or writes at the
        time (``xserve compact`` runs with the app stopped): older versions are gone afterwards."""
        import warnings
        from datetime import timedelta

        table = self._table(name)
        if table is None:
            return
        with warnings.catch_warnings():  # lancedb warns that older versions go: that is the point here
            warnings.simplefilter("ignore", UserWarning)
            table.optimize(cleanup_older_than=timedelta(0), delete_unverified=True)

    def count(self, name: str) -> int:
        """Rows in one of TABLES (0 if it does not exist yet)."""
        if name not in TABLES:
            raise DataDirError(f"unknown table {name!r}; tables are {tuple(TABLES)}")
        table = self._table(name)
        return 0 if table is None else table.count_rows()

    def counts(self) -> dict[str, int]:
        return {name: self.count(name) for name in TABLES}

    def has_world(self) -> bool:
        """True when there is something to train on: posts and engagements are both non-empty."""
        return self.count("posts") > 0 and self.count("engagements") > 0

    def is_empty(self) -> bool:
        """True when none of the tables holds a row."""
        return not any(self.counts().values())

    # ---------------------------------------------------------------- meta and ground truth

    def _stored_meta(self) -> dict[str, Any]:
        path = self.layout.meta
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text())
        except ValueError as exc:
            raise DataDirError(f"{path} is not valid JSON: {exc}") from None

    def meta(self) -> dict[str, Any]:
        """meta.json plus live ``counts``. Keys: ``schema_version`` (int), ``world`` (dict or absent:
        name, size, seed, now_ms, num_topics, ... for a synthetic world), ``imports`` (list of dicts),
        ``counts`` ({table: rows})."""
        return {"schema_version": SCHEMA_VERSION, **self._stored_meta(), "counts": self.counts()}

    def update_meta(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` (JSON-serialisable) into meta.json, atomically; returns the new meta()."""
        stored = {**self._stored_meta(), **fields, "schema_version": SCHEMA_VERSION}
        stored.pop("counts", None)
        _atomic_write(self.layout.meta, json.dumps(stored, indent=2, sort_keys=True).encode(), self.fsync)
        return self.meta()

    def write_ground_truth(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Store the synthetic world's latent arrays (see ``xserve.synth``), replacing any previous ones."""
        import io

        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
        _atomic_write(self.layout.ground_truth, buf.getvalue(), self.fsync)

    def read_ground_truth(self) -> dict[str, np.ndarray] | None:
        """The arrays saved by ``write_ground_truth``, or None (e.g. an imported log)."""
        path = self.layout.ground_truth
        if not path.exists():
            return None
        with np.load(path) as npz:
            return {k: npz[k] for k in npz.files}

    def clear(self) -> None:
        """Drop the four tables, meta.json and the ground truth (``xserve seed --force``)."""
        for name in TABLES:
            if self._table(name) is not None:
                self._db.drop_table(name)
        for path in (self.layout.meta, self.layout.ground_truth):
            path.unlink(missing_ok=True)


class _Counter:
    """Passes tables through while counting rows and keeping the error that stopped the stream, if any."""

    def __init__(self, tables: Iterable[pa.Table]) -> None:
        self._tables = tables
        self.rows = 0
        self.error: Exception | None = None

    def __iter__(self) -> Iterator[pa.Table]:
        try:
            for t in self._tables:
                self.rows += t.num_rows
                yield t
        except Exception as exc:
            self.error = exc
            raise


def _atomic_write(path: Path, data: bytes, fsync: bool) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    if fsync:
        fsync_path(path.parent)
