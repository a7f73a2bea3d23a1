"""Bounding the data directory on disk: retention and compaction of the logs (``xserve compact``).

What grows with traffic, and what bounds it:

* the impression log (``DIR/impressions/``): segments older than ``loop.impression_retention_ms`` are dropped,
  by each user-store shard once a minute while serving and here;
* the user-store logs (``DIR/users/``), never compacted before: every engagement, served-history record and
  graph edit since the data directory was seeded, all replayed by every shard on start. Compaction folds the
  engagements into the engagements table (where ``xserve train`` and a restarted shard read them; keyed, so
  folding twice adds nothing), drops served-history records older than ``serving.max_served_age_ms`` (the
  store forgets them anyway), keeps every other event (profiles, edges, muted keywords: the tables do not
  hold them all), and rewrites each log with what it kept. The engagements table then keeps
  ``loop.engagement_retention_ms`` of history;
* Thunder's log: dropped past ``thunder.retention_ms`` by its ingest actor (and here);
* the post catalog's logs (``DIR/hydration/``), the source of truth for posts created through the API: whole
  segments older than the catalog's live window (``mixer.max_post_age_ms``, the retention its shards keep live
  posts for) are folded into the posts table (created posts inserted, labels set, deleted posts removed) and
  then dropped, never past what a consumer has read (Thunder's and the live indexer's watermarks). A restarted
  catalog finds the folded posts in the table, and training and the backfill read them there
  (``xserve.loop.live_data.accepted_posts``). Offsets keep counting, so the consumers' watermarks stay valid.

A log is rewritten beside the old one (``.compact-<name>``), then swapped in by two renames; a crash between
them is finished by the next run (``recover``). The writers' locks are taken first, so compaction of the
user logs runs with the app stopped: while it serves, its shards hold the locks and the run says so.
"""

from __future__ import annotations

import heapq
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xserve.config import XServeConfig
from xserve.schema import EngagementRecorded, Served, UserEvent
from xserve.storage.files import fsync_path
from xserve.storage.layout import SHARD_LOG_GLOB, DataDirLayout
from xserve.storage.log.event_log import EventLog, EventLogLocked
from xserve.storage.log.log_tail import read_watermark

__all__ = ["CompactionReport", "compact", "directory_bytes", "recover"]

_NEW, _OLD = ".compact-", ".old-"  # hidden names: SHARD_LOG_GLOB never matches them


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


@dataclass
class CompactionReport:
    bytes_before: dict[str, int] = field(default_factory=dict)  # area -> bytes
    bytes_after: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # one line per part left alone, with why

    def lines(self) -> list[str]:
        out = [f"compact.{area}.bytes_before {self.bytes_before[area]} bytes" for area in self.bytes_before]
        out += [f"compact.{area}.bytes_after {self.bytes_after[area]} bytes" for area in self.bytes_after]
        out += [f"compact.{name} {n} count" for name, n in self.counts.items()]
        return out + [f"skipped: {s}" for s in self.skipped]


def recover(root: Path) -> None:
    """Finish or undo a rewrite a crash interrupted under ``root`` (a directory of shard logs)."""
    if not root.is_dir():
        return
    for new in root.glob(f"{_NEW}*"):
        name = new.name[len(_NEW):]
        if (root / name).exists():
            shutil.rmtree(new)  # the swap had not started: the old log is whole
        elif (root / f"{_OLD}{name}").exists():
            new.rename(root / name)  # the old log was moved away: finish the swap
    for old in root.glob(f"{_OLD}*"):
        if (root / old.name[len(_OLD):]).exists():
            shutil.rmtree(old)


def _areas(layout: DataDirLayout) -> dict[str, Path]:
    return {"impressions": layout.impression_logs, "user_logs": layout.user_logs, "thunder_log": layout.thunder_events,
            "engagements_table": layout.table("engagements"), "catalog_logs": layout.catalog_logs,
            "posts_table": layout.table("posts")}


def _batches(log: EventLog) -> Iterator[tuple[int, list[Any]]]:
    """The log's records grouped back into append batches (consecutive records with one append time)."""
    batch: list[Any] = []
    at_ms = None
    for _, at, event in log.read():
        if batch and at != at_ms:
            yield at_ms, batch
            batch = []
        at_ms = at
        batch.append(event)
    if batch:
        yield at_ms, batch


def _compact_user_logs(layout: DataDirLayout, config: XServeConfig, now_ms: int, report: CompactionReport) -> None:
    from xserve.storage.lance.tables import DataDir, engagements_to_table

    root = layout.user_logs
    recover(root)
    dirs = [d for d in sorted(root.glob(SHARD_LOG_GLOB)) if d.is_dir()] if root.is_dir() else []
    writers: list[EventLog] = []
    try:
        for d in dirs:  # every lock first: nothing is rewritten while any shard serves
            writers.append(EventLog(d, writer=True, fsync=config.storage.fsync, event_type=UserEvent))
    except EventLogLocked:
        for w in writers:
            w.close()
        report.skipped.append("user logs: held by the running app (stop it, then run `xserve compact` again)")
        return
    served_cutoff = now_ms - config.serving.max_served_age_ms
    # a restarted shard reads the engagements table only beside a users table (users.shard.load_tables)
    fold = layout.table("users").exists()
    engagements, kept, dropped = [], 0, 0
    plans: list[tuple[Path, list[tuple[int, list[Any]]]]] = []
    for d, log in zip(dirs, writers):
        keep: list[tuple[int, list[Any]]] = []
        for at_ms, batch in _batches(log):
            rest = []
            for event in batch:
                if isinstance(event, EngagementRecorded) and fold:
                    engagements.append(event.engagement)
                elif isinstance(event, Served) and event.at_ms < served_cutoff:
                    dropped += 1
                else:
                    rest.append(event)
            if rest:
                keep.append((at_ms, rest))
                kept += len(rest)
        plans.append((d, keep))
    if engagements:  # durable in the table before any log loses them
        DataDir(layout.root, fsync=config.storage.fsync).write_engagements(engagements_to_table(engagements),
                                                                           mode="insert_new")
    for (d, keep), log in zip(plans, writers):
        new = d.parent / f"{_NEW}{d.name}"
        shutil.rmtree(new, ignore_errors=True)
        with EventLog(new, writer=True, fsync=config.storage.fsync, event_type=UserEvent) as out:
            for i, (at_ms, batch) in enumerate(keep):
                out.append(batch, at_ms, sync=i == len(keep) - 1)  # one fsync, at the end
        (new / "LOCK").unlink(missing_ok=True)
        log.close()
        d.rename(d.parent / f"{_OLD}{d.name}")
        new.rename(d)
        fsync_path(d.parent)
        shutil.rmtree(d.parent / f"{_OLD}{d.name}")
    report.counts.update(user_log_engagements_folded=len(engagements), user_log_served_dropped=dropped,
                         user_log_events_kept=kept)


def _consumer_offsets(layout: DataDirLayout) -> list[dict[str, int]]:
    """The committed offsets of each consumer of the catalog's logs that has run (Thunder, the live indexer)."""
    # a consumer that never ran starts from what is left, and what went is in the posts table
    found = (read_watermark(w) for w in (layout.thunder_catalog_watermark, layout.live_index_watermark))
    return [offsets for offsets, _ in filter(None, found)]


def _compact_catalog_logs(layout: DataDirLayout, config: XServeConfig, now_ms: int, report: CompactionReport) -> None:
    from xserve.loop.live_data import CatalogChanges
    from xserve.posts.catalog import CatalogEvent
    from xserve.storage.lance.tables import DataDir, posts_to_table

    root = layout.catalog_logs
    dirs = [d for d in sorted(root.glob(SHARD_LOG_GLOB)) if d.is_dir()] if root.is_dir() else []
    consumers = _consumer_offsets(layout)
    cutoff = now_ms - config.mixer.max_post_age_ms
    folded, dropped, held = CatalogChanges(), 0, False
    logs: list[tuple[EventLog, int]] = []
    try:
        for d in dirs:
            try:
                log = EventLog(d, writer=True, fsync=config.storage.fsync, event_type=CatalogEvent)
            except EventLogLocked:
                held = True
                report.skipped.append(f"catalog log {d.name}: held by the running app (stop it, then compact again)")
                continue
            read = min((c.get(d.name, 0) for c in consumers), default=None)  # never past what a consumer has read
            boundary = log.retention_boundary(cutoff, read)
            folded.apply(event for _, _, event in log.read(until_offset=boundary))
            logs.append((log, boundary))
        if folded.created or folded.labels or folded.deleted:  # durable in the table before any log loses them
            dd = DataDir(layout.root, fsync=config.storage.fsync)
            posts = folded.posts()
            if posts:
                dd.write_posts(posts_to_table(posts), mode="upsert")
            labelled = {pid: labels for pid, labels in folded.labels.items()
                        if pid not in folded.created and pid not in folded.deleted}
            report.counts["catalog_labels_folded"] = dd.set_post_labels(labelled)
            report.counts["catalog_posts_deleted"] = dd.delete_posts(folded.deleted)
            report.counts["catalog_posts_folded"] = len(posts)
            if not held:  # every catalog shard stopped: nothing reads the table's older versions
                dd.reclaim("posts")
        for log, boundary in logs:
            dropped += log.drop_before(cutoff, boundary)
    finally:
        for log, _ in logs:
            log.close()
    report.counts["catalog_segments_dropped"] = dropped


def _drop_expired(path: Path, cutoff_ms: int, event_type: Any, what: str, report: CompactionReport) -> int:
    dropped = 0
    for d in ([path] if (path / "LOCK").exists() or any(path.glob("*.seg")) else sorted(path.glob(SHARD_LOG_GLOB))):
        try:
            with EventLog(d, writer=True, event_type=event_type) as log:
                dropped += log.drop_before(cutoff_ms)
        except EventLogLocked:
            report.skipped.append(f"{what} {d.name}: held by the running app (it drops expired segments itself)")
    return dropped


def compact(config: XServeConfig, now_ms: int) -> CompactionReport:
    """Retention and compaction of the data directory (module docstring); returns what it did and the sizes."""
    from xserve.schema import ImpressionRecord, PostEvent

    layout = DataDirLayout(config.storage.data_dir)
    report = CompactionReport()
    report.bytes_before = {a: directory_bytes(p) for a, p in _areas(layout).items()}
    if layout.impression_logs.is_dir():
        report.counts["impression_segments_dropped"] = _drop_expired(
            layout.impression_logs, now_ms - config.loop.impression_retention_ms, ImpressionRecord, "impression log", report)
    if layout.thunder_events.is_dir():
        report.counts["thunder_segments_dropped"] = _drop_expired(
            layout.thunder_events, now_ms - config.thunder.retention_ms, PostEvent, "thunder log", report)
    _compact_user_logs(layout, config, now_ms, report)
    if config.loop.engagement_retention_ms > 0 and layout.table("engagements").exists():
        from xserve.storage.lance.tables import DataDir

        table = DataDir(layout.root, fsync=config.storage.fsync)
        report.counts["engagements_expired"] = table.delete_engagements_before(
            now_ms - config.loop.engagement_retention_ms)
        if report.counts["engagements_expired"] or report.counts.get("user_log_engagements_folded"):
            table.reclaim("engagements")  # a delete only marks rows; the folds left a version each
    _compact_catalog_logs(layout, config, now_ms, report)
    report.bytes_after = {a: directory_bytes(p) for a, p in _areas(layout).items()}
    return report
