"""What ``xserve train`` learns from: the engagements table (seeded or imported) plus the live engagements, and
the posts table plus the posts created through the API (:func:`accepted_posts`).

The API appends every accepted engagement to the user-store event logs (``EngagementRecorded``, fsynced
before the answer, replayed after a restart), with the ``prediction_request_id`` the client sent back.
:func:`live_engagements` reads them from those logs; :func:`training_engagements` adds them to the table's
rows (a row in both, once folded by ``xserve compact``, is counted once: the table's key is user, post,
action and time). The join key to the impression log is ``prediction_request_id`` = the feed's request id.

Posts: ``POST /v1/posts`` logs each new post (fsynced) in the post catalog's logs (``DIR/hydration/``), the
source of truth for live posts; the posts table holds the seeded or imported ones and, once ``xserve compact``
folds them, the older live ones. :func:`accepted_posts` is the one place training (and the re-embedding
backfill) reads posts from: both, each post once, deletions and label changes applied.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from xserve.schema import (Engagement, EngagementRecorded, Post, PostCreated, PostDeleted, PostLabelsSet, QuotedPostDeleted,
                           UserEvent)
from xserve.storage.layout import SHARD_LOG_GLOB, DataDirLayout
from xserve.storage.log.event_log import EventLog

__all__ = ["LIVE_COLUMNS", "CatalogChanges", "accepted_posts", "catalog_changes", "engagements_table", "live_engagements",
           "training_engagements"]

# the engagements table's columns, with the request id that served the post (null when the client sent none)
LIVE_COLUMNS = ("user_id", "post_id", "author_id", "action", "timestamp_ms", "dwell_ms", "product_surface",
                "post_created_at_ms", "prediction_request_id")


def live_engagements(user_logs: Path, since_ms: int | None = None) -> list[Engagement]:
    """Every engagement logged under ``user_logs`` (``DIR/users``), each once, oldest log append first."""
    out: list[Engagement] = []
    seen: set[tuple[int, int, str, int]] = set()  # a multi-user batch is logged once, by its coordinator
    if not user_logs.is_dir():
        return out
    for d in sorted(user_logs.glob(SHARD_LOG_GLOB)):
        if not d.is_dir():
            continue
        for _, _, event in EventLog(d, event_type=UserEvent).read(since_ms=since_ms):
            if isinstance(event, EngagementRecorded):
                e = event.engagement
                key = (e.user_id, e.post_id, str(e.action), e.timestamp_ms)
                if key not in seen:
                    seen.add(key)
                    out.append(e)
    return out


def engagements_table(engagements: list[Engagement]) -> pa.Table:
    """``LIVE_COLUMNS`` as an Arrow table (the engagements table's types, plus the request id)."""
    cols: dict[str, list[Any]] = {c: [] for c in LIVE_COLUMNS}
    for e in engagements:
        cols["user_id"].append(e.user_id)
        cols["post_id"].append(e.post_id)
        cols["author_id"].append(e.author_id)
        cols["action"].append(str(e.action))
        cols["timestamp_ms"].append(e.timestamp_ms)
        cols["dwell_ms"].append(e.dwell_ms)
        cols["product_surface"].append(int(e.product_surface))
        cols["post_created_at_ms"].append(e.post_created_at_ms)
        cols["prediction_request_id"].append(e.prediction_request_id)
    types = {"action": pa.string(), "product_surface": pa.int32(), "prediction_request_id": pa.string()}
    return pa.table({c: pa.array(v, type=types.get(c, pa.int64())) for c, v in cols.items()})


def training_engagements(data_dir: str | Path) -> tuple[pa.Table, dict[str, int]]:
    """(the table's engagements plus the live ones, sorted by time; counts ``table``, ``live``, ``live_new``)."""
    from xserve.storage.lance.tables import DataDir  # LanceDB: only here

    layout = DataDirLayout(data_dir)
    dd = DataDir(layout.root, create=False)
    table = dd.read_engagements() if dd.count("engagements") else None
    live = engagements_table(live_engagements(layout.user_logs))
    counts = {"table": 0 if table is None else table.num_rows, "live": live.num_rows}
    if table is not None and live.num_rows:
        key = ("user_id", "post_id", "action", "timestamp_ms")
        first_live = int(np.min(live.column("timestamp_ms").to_numpy()))
        recent = table.filter(pa.array(table.column("timestamp_ms").to_numpy() >= first_live))  # only these can repeat
        have = set(zip(*(recent.column(c).to_pylist() for c in key)))
        keep = [k not in have for k in zip(*(live.column(c).to_pylist() for c in key))]
        live = live.filter(pa.array(keep, pa.bool_()))
    counts["live_new"] = live.num_rows
    if table is None:
        merged = live
    else:
        merged = pa.concat_tables([table, live.cast(table.schema)]) if live.num_rows else table
    if merged.num_rows > 1:
        merged = merged.take(pa.array(np.argsort(merged.column("timestamp_ms").to_numpy(), kind="stable")))
    return merged, counts


@dataclass
class CatalogChanges:
    """What post-catalog events change about posts, folded: the posts they create, the labels they set, the posts
    they delete (a delete wins over a create or a label, in any order: a deleted id is never reused)."""

    created: dict[int, Post] = field(default_factory=dict)  # post id -> the post as created (labels as set since)
    labels: dict[int, tuple[str, ...]] = field(default_factory=dict)  # post id -> its labels, set after creation
    deleted: set[int] = field(default_factory=set)

    def apply(self, events: Iterable[Any]) -> CatalogChanges:
        for event in events:
            match event:
                case PostCreated(post=post):
                    self.created.setdefault(post.post_id, post)  # a retried create is the same post
                case PostDeleted(post_id=pid) | QuotedPostDeleted(quoting_post_id=pid):
                    self.deleted.add(pid)
                case PostLabelsSet(post_id=pid, labels=labels):
                    self.labels[pid] = tuple(sorted({str(label) for label in labels}))
        return self

    def posts(self) -> list[Post]:
        """The created posts not deleted, with their labels as last set."""
        return [msgspec.structs.replace(p, labels=self.labels[pid]) if pid in self.labels else p
                for pid, p in self.created.items() if pid not in self.deleted]


def catalog_changes(catalog_logs: Path, since_ms: int | None = None) -> CatalogChanges:
    """Every event of the post catalog's logs under ``catalog_logs`` (``DIR/hydration``), folded."""
    from xserve.posts.catalog import CatalogEvent

    changes = CatalogChanges()
    for d in sorted(catalog_logs.glob(SHARD_LOG_GLOB)) if catalog_logs.is_dir() else ():
        if d.is_dir():
            changes.apply(event for _, _, event in EventLog(d, event_type=CatalogEvent).read(since_ms=since_ms))
    return changes


def accepted_posts(data_dir: str | Path, columns: Sequence[str] | None = None) -> tuple[pa.Table | None, dict[str, int]]:
    """Every post the server accepted and has not deleted, as the posts table's ``columns`` (default all): the
    posts table plus the posts created through the API (the catalog's logs), each once, labels as last set.
    Returns (the table, or None when there is no post at all; counts ``table`` and ``live`` (the rows from each),
    ``deleted`` (table rows left out as deleted))."""
    from xserve.storage.lance.tables import POSTS_SCHEMA, DataDir, posts_to_table  # LanceDB: only here

    layout = DataDirLayout(data_dir)
    cols = list(POSTS_SCHEMA.names if columns is None else columns)
    dd = DataDir(layout.root, create=False)
    table = dd.read_posts(columns=cols if "post_id" in cols else ["post_id", *cols]) if dd.count("posts") else None
    changes = catalog_changes(layout.catalog_logs)
    table_ids = table.column("post_id").to_numpy() if table is not None else np.zeros(0, np.int64)  # (P,)
    counts = {"table": len(table_ids), "live": 0, "deleted": 0}
    if table is not None and changes.deleted:
        keep = ~np.isin(table_ids, np.fromiter(changes.deleted, np.int64))
        if not keep.all():
            counts["deleted"] = int((~keep).sum())
            table = table.filter(pa.array(keep))
            counts["table"] = table.num_rows
    relabelled = np.isin(table.column("post_id").to_numpy(), np.fromiter(changes.labels, np.int64)) \
        if table is not None and "labels" in cols and changes.labels else None
    if relabelled is not None and relabelled.any():
        labels = [list(changes.labels.get(pid, old)) for pid, old in zip(table.column("post_id").to_pylist(),
                                                                         table.column("labels").to_pylist())]
        table = table.set_column(table.schema.get_field_index("labels"), table.schema.field("labels"),
                                 pa.array(labels, table.schema.field("labels").type))
    created = changes.posts()
    in_table = np.isin(np.fromiter((p.post_id for p in created), np.int64, len(created)), table_ids)  # folded already
    live = posts_to_table(p for p, folded in zip(created, in_table.tolist()) if not folded)
    counts["live"] = live.num_rows
    if table is None and not live.num_rows:
        return None, counts
    live = live.select(table.column_names if table is not None else cols)
    merged = live if table is None else pa.concat_tables([table, live.cast(table.schema)])
    return merged.select(cols), counts
