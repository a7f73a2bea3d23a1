"""The impression log: every served feed, written by the viewer's user-store shard after the response.

Each user-store shard owns one log, ``DIR/impressions/shard-<i>-of-<n>/`` (an
:class:`~xserve.storage.log.event_log.EventLog` of :class:`~xserve.schema.FeedImpressions`; one writer per
log, the shard actor). The feed's side effect hands the shard the served ids and the impressions in one call;
the shard appends them without an fsync per feed and fsyncs at most every
``loop.impression_sync_interval_s``, so logging never stalls the shard.

Loss is bounded and counted: a feed whose side effect is shed (``mixer.max_pending_side_effects``),
times out or fails is counted by the ingress (``ImpressionCounts``, in ``/v1/admin/stats``); a process
crash loses nothing already appended (the kernel holds it); a power loss loses at most the last sync
interval. Disk is bounded by ``loop.impression_retention_ms``: whole segments older than it are dropped
(:meth:`ImpressionLog.drop_expired`, run by the shard at most once a minute, and by ``xserve compact``).

What was seen: the server logs every post it returned, but a client shows only what the reader scrolled to.
``POST /v1/impressions`` reports that (``SeenImpressions``), and the viewer's shard appends it to the same log
as a :class:`~xserve.schema.FeedSeen` record, durable as the feed's record is. :func:`seen_feeds` joins the two
by request id: a feed with at least one report counts only its reported posts, at their screen positions; a
feed without one (a client that never reports, or whose report was lost) counts every served post
(``loop.unreported_feeds = "served"``, the default) or nothing (``"skip"``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from xserve.clock import MINUTE_MS
from xserve.config import LoopConfig
from xserve.schema import ACTIONS, FeedImpressions, FeedSeen, Impression, ImpressionRecord, PostCandidate, ServedType
from xserve.storage.layout import SHARD_LOG_GLOB
from xserve.storage.log.event_log import EventLog

__all__ = ["ImpressionCounts", "ImpressionLog", "feed_impressions", "impression_arrays", "read_impression_records",
           "read_impressions", "seen_feeds"]

RETENTION_CHECK_MS = MINUTE_MS  # the shard drops expired segments at most this often


def feed_impressions(request_id: str, viewer_id: int, served_at_ms: int,
                     selected: Sequence[PostCandidate]) -> FeedImpressions:
    """The impression record of one served feed (``selected`` in served order)."""
    versions = {c.model_version for c in selected if c.model_version}
    return FeedImpressions(
        request_id=request_id,
        viewer_id=viewer_id,
        served_at_ms=served_at_ms,
        model_version=",".join(sorted(versions)),  # one version by construction; two would show here
        impressions=tuple(Impression(c.post_id, c.author_id, i, c.served_type, c.action_scores, c.score, c.source)
                          for i, c in enumerate(selected)),
    )


@dataclass
class ImpressionCounts:
    """Per ingress replica: feeds served, feeds whose impressions reached the log, and those lost before it."""

    served_feeds: int = 0  # feeds answered with at least one post (counted by the ingress)
    logged_feeds: int = 0
    logged_impressions: int = 0
    failed_feeds: int = 0  # the shard call failed or timed out: lost (shed side effects are counted by the pipeline)

    def as_dict(self) -> dict[str, int]:
        return {"served_feeds": self.served_feeds, "logged_feeds": self.logged_feeds,
                "logged_impressions": self.logged_impressions, "failed_feeds": self.failed_feeds,
                # shed (max_pending_side_effects), failed, or still being written
                "not_logged_feeds": max(0, self.served_feeds - self.logged_feeds)}


class ImpressionLog:
    """One shard's impression log (see the module docstring). ``clock`` is monotonic seconds (sync pacing)."""

    def __init__(self, directory: str | os.PathLike[str], config: LoopConfig, lock_wait_s: float = 0.0,
                 clock: Callable[[], float] | None = None) -> None:
        import time

        self.config = config
        self._clock = clock or time.monotonic
        self._log = EventLog(directory, writer=True, fsync=True, segment_bytes=config.impression_segment_bytes,
                             event_type=ImpressionRecord, lock_wait_s=lock_wait_s)
        self._synced_at = self._clock()
        self._retention_checked_ms = 0
        self.feeds = 0  # appended since open
        self.seen_reports = 0  # FeedSeen records appended since open
        self.dropped_segments = 0

    def __repr__(self) -> str:
        return f"ImpressionLog({str(self._log.directory)!r}, feeds={self.feeds})"

    def append(self, records: Sequence[ImpressionRecord], now_ms: int) -> None:
        """Append; fsync when the last one is older than the sync interval; drop expired segments now and then."""
        sync = self._clock() - self._synced_at >= self.config.impression_sync_interval_s
        self._log.append(records, now_ms, sync=sync)
        if sync:
            self._synced_at = self._clock()
        seen = sum(isinstance(r, FeedSeen) for r in records)
        self.seen_reports += seen
        self.feeds += len(records) - seen
        if now_ms - self._retention_checked_ms >= RETENTION_CHECK_MS:
            self.drop_expired(now_ms)

    def drop_expired(self, now_ms: int) -> int:
        """Delete whole segments older than ``impression_retention_ms``; returns how many."""
        self._retention_checked_ms = now_ms
        dropped = self._log.drop_before(now_ms - self.config.impression_retention_ms)
        self.dropped_segments += dropped
        return dropped

    def close(self) -> None:
        self._log.close()


def read_impression_records(root: Path, since_ms: int | None = None) -> Iterator[ImpressionRecord]:
    """Every record (served feeds and seen reports) under ``root`` (``DIR/impressions``), log by log."""
    if not root.is_dir():
        return
    for d in sorted(root.glob(SHARD_LOG_GLOB)):
        if d.is_dir():
            for _, _, record in EventLog(d, event_type=ImpressionRecord).read(since_ms=since_ms):
                yield record


def read_impressions(root: Path, since_ms: int | None = None) -> Iterator[FeedImpressions]:
    """Every logged feed under ``root`` (``DIR/impressions``), as served, log by log; ``since_ms`` skips older appends."""
    for record in read_impression_records(root, since_ms):
        if isinstance(record, FeedImpressions):
            yield record


def seen_feeds(records: Iterable[ImpressionRecord], unreported: str = "served") -> tuple[list[FeedImpressions], dict[str, int]]:
    """The feeds as the readers saw them (module docstring): each feed with a seen report keeps only the reported
    posts, at their screen positions (their served scores kept); one without keeps every served post
    (``unreported="served"``) or is left out (``"skip"``). Returns the feeds and the counts ``feeds``,
    ``reported_feeds``, ``served_impressions``, ``seen_impressions`` and ``seen_unmatched`` (reported posts the
    feed's record does not hold: a report for a feed never logged, or a post it did not serve)."""
    if unreported not in ("served", "skip"):
        raise ValueError(f"unreported must be 'served' or 'skip', got {unreported!r}")
    feeds: list[FeedImpressions] = []
    seen: dict[str, dict[int, int]] = {}  # request id -> {post id: screen position}, over every report
    for record in records:
        if isinstance(record, FeedSeen):
            positions = seen.setdefault(record.request_id, {})
            for i, pid in enumerate(record.post_ids):
                positions.setdefault(pid, record.first_position + i)
        else:
            feeds.append(record)
    out: list[FeedImpressions] = []
    counts = {"feeds": len(feeds), "reported_feeds": 0, "served_impressions": 0, "seen_impressions": 0,
              "seen_unmatched": sum(len(p) for p in seen.values())}
    for feed in feeds:
        counts["served_impressions"] += len(feed.impressions)
        positions = seen.get(feed.request_id)
        if positions is None:
            if unreported == "served":
                out.append(feed)
            continue
        shown = sorted((i for i in feed.impressions if i.post_id in positions), key=lambda i: positions[i.post_id])
        kept = tuple(msgspec.structs.replace(i, position=positions[i.post_id]) for i in shown)
        counts["reported_feeds"] += 1
        counts["seen_impressions"] += len(kept)
        counts["seen_unmatched"] -= len(kept)
        out.append(msgspec.structs.replace(feed, impressions=kept))
    return out, counts


def impression_arrays(feeds: Iterator[FeedImpressions] | Sequence[FeedImpressions]) -> dict[str, Any]:
    """One row per impression: viewer, post, author, position, served_at_ms, in_network, model_version,
    request_id, and the predictions ``probs (N, A)`` (NaN where the post was not ranked)."""
    cols: dict[str, list[Any]] = {k: [] for k in ("user_id", "post_id", "author_id", "position", "served_at_ms",
                                                  "in_network", "model_version", "request_id")}
    probs: list[Sequence[float]] = []
    missing = [float("nan")] * len(ACTIONS)
    for feed in feeds:
        for imp in feed.impressions:
            cols["user_id"].append(feed.viewer_id)
            cols["post_id"].append(imp.post_id)
            cols["author_id"].append(imp.author_id)
            cols["position"].append(imp.position)
            cols["served_at_ms"].append(feed.served_at_ms)
            cols["in_network"].append(imp.served_type is ServedType.IN_NETWORK)
            cols["model_version"].append(feed.model_version)
            cols["request_id"].append(feed.request_id)
            probs.append(missing if imp.scores is None else [imp.scores.get(a) for a in ACTIONS])
    out: dict[str, Any] = {k: np.asarray(v, dtype=np.int64) for k, v in cols.items()
                           if k not in ("in_network", "model_version", "request_id")}
    out["in_network"] = np.asarray(cols["in_network"], dtype=bool)
    out["model_version"] = cols["model_version"]
    out["request_id"] = cols["request_id"]
    out["probs"] = np.asarray(probs, dtype=np.float32).reshape(len(probs), len(ACTIONS))  # (N, A)
    return out
