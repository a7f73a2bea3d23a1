"""What ``xserve train`` learns from: the engagements table (seeded or imported) plus the live engagements.

The API appends every accepted engagement to the user-store event logs (``EngagementRecorded``, fsynced
before the answer, replayed after a restart), with the ``prediction_request_id`` the client sent back.
:func:`live_engagements` reads them from those logs; :func:`training_engagements` adds them to the table's
rows (a row in both, once folded by ``xserve compact``, is counted once: the table's key is user, post,
action and time). The join key to the impression log is ``prediction_request_id`` = the feed's request id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from xserve.schema import Engagement, EngagementRecorded, UserEvent
from xserve.storage.layout import SHARD_LOG_GLOB, DataDirLayout
from xserve.storage.log.event_log import EventLog

__all__ = ["LIVE_COLUMNS", "engagements_table", "live_engagements", "training_engagements"]

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
