"""``UserShard``: one shard of the user store with its write-ahead log (pure; the actor is a shell around it).

On open it loads its users from the data directory's tables (users, edges,
engagements), then replays the user store's event logs
(``<data_dir>/users/shard-<i>-of-<n>/``), so a reopened shard has the same
state. A write is logged (fsynced) before it is applied and acknowledged.

Every shard replays *every* shard's log, merged by append time, keeping the
events that name its users (``UserStore.apply`` ignores the rest): a write
across shards is logged by its coordinator alone (:mod:`xserve.users.writes`),
and this is how the other shards find it after a crash. Logs of an earlier
shard count are replayed too, so changing ``num_user_shards`` loses nothing.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from xserve.clock import now_ms
from xserve.config import XServeConfig
from xserve.schema import FeedImpressions, FeedSeen, Served, UserEvent, UserProfile, UserQueryData
from xserve.storage.layout import SHARD_LOG_GLOB, DataDirLayout
from xserve.storage.log.event_log import EventLog
from xserve.users.store import UserStore
from xserve.users.writes import Refusal, required_users

__all__ = ["UserShard", "load_tables", "replay_user_logs"]


class UserShard:
    """A :class:`UserStore` shard and its event log: check, log, apply (see the module docstring)."""

    def __init__(self, store: UserStore, log: EventLog, clock_ms: Callable[[], int] = now_ms) -> None:
        self.store = store
        self._log = log
        self._clock_ms = clock_ms
        self.loaded: dict[str, int] = {}  # rows loaded from the tables, per table
        self.replayed = 0  # events replayed from the logs
        self.impressions: Any = None  # xserve.loop.impressions.ImpressionLog of this shard (loop.log_impressions)

    @classmethod
    def open(
        cls, config: XServeConfig, shard: int, num_shards: int, clock_ms: Callable[[], int] = now_ms
    ) -> UserShard:
        """The shard as the data directory holds it: tables loaded, every user-store log replayed."""
        layout = DataDirLayout(config.storage.data_dir)
        store = UserStore(config.serving, config.mixer, shard, num_shards)
        loaded = load_tables(store, layout.root)
        log = EventLog(
            layout.user_log(shard, num_shards),
            writer=True,
            fsync=config.storage.fsync,
            event_type=UserEvent,
            lock_wait_s=config.storage.lock_wait_s,
        )
        opened = cls(store, log, clock_ms)
        opened.loaded = loaded
        opened.replayed = replay_user_logs(layout.user_logs, store.apply)
        if config.loop.log_impressions:
            from xserve.loop.impressions import ImpressionLog

            opened.impressions = ImpressionLog(layout.impression_log(shard, num_shards), config.loop,
                                               lock_wait_s=config.storage.lock_wait_s)
        return opened

    def stats(self) -> dict[str, Any]:
        out = {"store": repr(self.store), "loaded": self.loaded, "replayed": self.replayed}
        if self.impressions is not None:
            out["impression_log"] = {"feeds": self.impressions.feeds, "seen_reports": self.impressions.seen_reports,
                                     "dropped_segments": self.impressions.dropped_segments}
        return out

    def record_served(self, served: Served, impressions: FeedImpressions | None = None) -> None:
        """The served-history side effect of one feed: the served ids (user log) and its impressions (impression log).

        Both are soft signals written after the response: no fsync per feed (see ``xserve.loop.impressions``).
        """
        if served.post_ids:
            self.apply([served], checked=True)
        if impressions is not None and self.impressions is not None:
            self.impressions.append([impressions], self._clock_ms())

    def record_seen(self, reports: Sequence[FeedSeen]) -> bool:
        """Log what clients showed of served feeds (``POST /v1/impressions``) in the impression log, as durable as
        the feeds' own records; False when this shard logs no impressions (``loop.log_impressions`` off)."""
        if self.impressions is None:
            return False
        self.impressions.append(reports, self._clock_ms())
        return True

    def query_data(self, user_id: int, history_limit: int, trim_block: int = 1) -> UserQueryData | None:
        return self.store.query_data(user_id, history_limit, self._clock_ms(), trim_block)

    def profiles(self, user_ids: Sequence[int]) -> dict[int, UserProfile]:
        return self.store.profiles(user_ids)

    def check(self, events: Sequence[UserEvent]) -> Refusal | None:
        """(status, reason) for the first event this shard refuses, or None."""
        missing = self.store.missing({u for e in events for u in required_users(e)})
        if missing:
            return 404, f"unknown user {missing[0]}"
        for event in events:
            reason = self.store.check(event)
            if reason is not None:
                return 409, reason
        return None

    def apply(self, events: Sequence[UserEvent], checked: bool = False, log: bool = True) -> Refusal | None:
        """Check (unless the caller did), log (unless the coordinator of a multi-shard write did), apply.

        Returns the refusal, or None once durable. Events naming no user of
        this shard are logged (a coordinator logs the whole write) but change nothing here.
        """
        if not checked and (refused := self.check(events)) is not None:
            return refused
        if log:  # served history is a soft signal written on every feed: no fsync, so it never stalls the shard
            self._log.append(events, self._clock_ms(), sync=not all(isinstance(e, Served) for e in events))
        for event in events:
            self.store.apply(event)
        return None

    def close(self) -> None:
        self._log.close()
        if self.impressions is not None:
            self.impressions.close()


def replay_user_logs(root: Path, apply: Callable[[UserEvent], Any]) -> int:
    """Apply every event of every user-store log under ``root``, merged by append time; returns how many."""
    logs = [EventLog(d, event_type=UserEvent) for d in sorted(root.glob(SHARD_LOG_GLOB)) if d.is_dir()]
    streams = [((at, i, offset, event) for offset, at, event in log.read()) for i, log in enumerate(logs)]
    n = 0
    for _, _, _, event in heapq.merge(*streams, key=lambda entry: entry[:3]):
        apply(event)
        n += 1
    return n


def load_tables(store: UserStore, data_dir: Path) -> dict[str, int]:
    """The shard's users, edges and engagement history from the data directory's tables (if any)."""
    if not DataDirLayout(data_dir).table("users").exists():
        return {}
    from xserve.storage import DataDir  # LanceDB: only when there are tables to read

    dd = DataDir(data_dir, create=False)
    users = dd.read_users(["user_id", "screen_name", "followers_count", "topics"]).to_pydict()
    out = {"users": store.load_users(users["user_id"], users["screen_name"], users["followers_count"], users["topics"])}
    edges = dd.read_edges(columns=["user_id", "target_id", "kind"]).to_pydict()
    out["edges"] = store.load_edges(edges["user_id"], edges["target_id"], edges["kind"])
    out["engagements"] = store.load_engagement_arrays(dd.read_engagement_arrays())
    return out
