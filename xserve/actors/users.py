"""``UserStoreShard`` actors (users sharded by id) and ``UserShardsClient``, the mixer's ``UserDataClient``.

A shard is a thin shell around :class:`xserve.users.UserStore`: on start it
loads its users from the data directory's tables (users, edges, engagements),
then replays the user store's event logs (``<data_dir>/users/shard-<i>-of-<n>/``,
each an :class:`~xserve.storage.log.event_log.EventLog`), so a restarted actor
rebuilds the same state. A write is logged (fsynced) before it is applied and
acknowledged.

A write that touches users of several shards (a follow across shards, an
engagement batch of several users) is logged once, whole, as one batch, by the
lowest of those shards (the coordinator); the others then apply their part
without logging it. A shard therefore replays *every* shard's log, merged by
append time, keeping the events that name its users (``UserStore.apply``
ignores the rest), so such a write is all or nothing across a crash: after
the restart, every shard has it or none does. (Logs of an earlier shard count
are replayed too, so changing ``num_user_shards`` loses nothing.)

Results cross the Ray boundary as msgpack bytes (built once, decoded by the
client) rather than pickled Structs: cheaper for the feed's hot calls.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import ray

from xserve.actors.calls import uncancelled
from xserve.clock import now_ms
from xserve.config import XServeConfig
from xserve.storage.layout import SHARD_LOG_GLOB, DataDirLayout
from xserve.schema import (
    EdgeSet,
    EdgeUnset,
    EngagementRecorded,
    HistoryItem,
    MutedKeywordsSet,
    Served,
    UserEvent,
    UserFeatures,
    UserProfile,
    UserQueryData,
    UserUpserted,
)
from xserve.sharding import group_by_shard, shard_for
from xserve.storage.log.event_log import EventLog
from xserve.users import UserStore, event_user_ids
from xserve.users.last_known import LastKnownViewers

__all__ = [
    "UserShardsClient",
    "UserStoreShard",
    "UserStoreUnavailable",
    "WriteRefused",
    "clear_prefetched",
    "prefetched_user",
    "required_users",
]

_QUERY_DEC = msgspec.msgpack.Decoder(UserQueryData | None)
_PROFILES_DEC = msgspec.msgpack.Decoder(dict[int, UserProfile])


class UserStoreUnavailable(Exception):
    """The viewer's shard did not answer in time and no earlier answer for the viewer is kept."""


class WriteRefused(Exception):
    """A write the user store refuses; ``status`` is the HTTP status (404 unknown user, 409 a cap)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def required_users(event: UserEvent) -> tuple[int, ...]:
    """Users that must exist for ``event`` to be accepted (a profile upsert creates its user)."""
    match event:
        case UserUpserted():
            return ()
        case EdgeSet(user_id=u, target_id=t) | EdgeUnset(user_id=u, target_id=t):
            return (u, t)
        case EngagementRecorded(engagement=e):
            return (e.user_id,)
        case MutedKeywordsSet(user_id=u) | Served(user_id=u):
            return (u,)
    raise TypeError(f"not a user event: {type(event).__name__}")


# max_restarts=-1: the constructor only reads the data directory, so a restart always rebuilds the same
# state; a finite budget would run out over repeated faults and leave the shard dead for good.
# allow_out_of_order_execution: still one call at a time, but no per-caller sequence numbers: with them, a
# cancelled call (Serve cancels a request's child tasks when its client goes away) queued while the actor
# was being created left every later call from that ingress waiting for good (chaos.py, full_restart).
# Every caller awaits a write before it sends the next, so no order it relies on is lost.
@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=1, allow_out_of_order_execution=True)
class UserStoreShard:
    """One shard of the user store (see the module docstring)."""

    def __init__(self, config: XServeConfig, shard: int, num_shards: int) -> None:
        self._enc = msgspec.msgpack.Encoder()  # per instance: Ray may pickle the class by value
        self._store = UserStore(config.serving, config.mixer, shard, num_shards)
        data_dir = Path(config.storage.data_dir)
        layout = DataDirLayout(data_dir)
        self.loaded = _load_tables(self._store, data_dir)
        self._log = EventLog(
            layout.user_log(shard, num_shards),
            writer=True,
            fsync=config.storage.fsync,
            event_type=UserEvent,
            lock_wait_s=config.storage.lock_wait_s,
        )
        self.replayed = _replay_all(layout.user_logs, self._store.apply)

    def stats(self) -> dict[str, Any]:
        return {"store": repr(self._store), "loaded": self.loaded, "replayed": self.replayed}

    def query_data(self, user_id: int, history_limit: int) -> bytes:
        return self._enc.encode(self._store.query_data(user_id, history_limit))

    def profiles(self, user_ids: Sequence[int]) -> bytes:
        return self._enc.encode(self._store.profiles(user_ids))

    def check(self, events: Sequence[UserEvent]) -> tuple[int, str] | None:
        """(status, reason) for the first event this shard refuses, or None."""
        missing = self._store.missing({u for e in events for u in required_users(e)})
        if missing:
            return 404, f"unknown user {missing[0]}"
        for event in events:
            reason = self._store.check(event)
            if reason is not None:
                return 409, reason
        return None

    def apply(self, events: Sequence[UserEvent], checked: bool = False, log: bool = True) -> tuple[int, str] | None:
        """Check (unless the caller did), log (unless the coordinator of a multi-shard write did), apply.

        Returns the refusal, or None once durable. Events naming no user of
        this shard are logged (a coordinator logs the whole write) but change nothing here.
        """
        if not checked and (refused := self.check(events)) is not None:
            return refused
        if log:  # served history is a soft signal written on every feed: no fsync, so it never stalls the shard
            self._log.append(events, now_ms(), sync=not all(isinstance(e, Served) for e in events))
        for event in events:
            self._store.apply(event)
        return None


def _replay_all(root: Path, apply: Any) -> int:
    """Apply every event of every user-store log under ``root``, merged by append time; returns how many."""
    logs = [EventLog(d, event_type=UserEvent) for d in sorted(root.glob(SHARD_LOG_GLOB)) if d.is_dir()]
    streams = [((at, i, offset, event) for offset, at, event in log.read()) for i, log in enumerate(logs)]
    n = 0
    for _, _, _, event in heapq.merge(*streams, key=lambda entry: entry[:3]):
        apply(event)
        n += 1
    return n


def _load_tables(store: UserStore, data_dir: Path) -> dict[str, int]:
    """The shard's users, edges and engagement history from the data directory's tables (if any)."""
    if not DataDirLayout(data_dir).table("users").exists():
        return {}
    from xserve.storage import DataDir

    dd = DataDir(data_dir, create=False)
    users = dd.read_users(["user_id", "screen_name", "followers_count"]).to_pydict()
    out = {"users": store.load_users(users["user_id"], users["screen_name"], users["followers_count"])}
    edges = dd.read_edges(columns=["user_id", "target_id", "kind"]).to_pydict()
    out["edges"] = store.load_edges(edges["user_id"], edges["target_id"], edges["kind"])
    out["engagements"] = store.load_engagement_arrays(dd.read_engagement_arrays())
    return out


# --------------------------------------------------------------------------- the client

_prefetched: contextvars.ContextVar[UserQueryData | None] = contextvars.ContextVar("xserve_user_data", default=None)


def prefetched_user(data: UserQueryData | None) -> contextvars.Token:
    """Make ``data`` the answer for its user in this context (the ingress fetched it to check the viewer).

    The pipeline's two query hydrators then read it instead of calling the
    shard twice: one user-store call per feed request.
    """
    return _prefetched.set(data)


def clear_prefetched(token: contextvars.Token) -> None:
    _prefetched.reset(token)


class UserShardsClient:
    """Satisfies the mixer's ``UserDataClient``; also the write path's entry to the user store."""

    def __init__(self, shards: Sequence[Any], history_length: int, last_known: LastKnownViewers | None = None) -> None:
        self._shards = list(shards)
        self._history_length = history_length
        self.last_known = last_known if last_known is not None else LastKnownViewers(0)  # for viewer_data

    def _shard(self, user_id: int) -> Any:
        return self._shards[shard_for(user_id, len(self._shards))]

    async def query_data(self, user_id: int) -> UserQueryData | None:
        data = _prefetched.get()
        if data is not None and data.user_id == user_id:
            return data
        return _QUERY_DEC.decode(await uncancelled(self._shard(user_id).query_data.remote(user_id, self._history_length)))

    async def viewer_data(self, user_id: int, stale_after_s: float, give_up_after_s: float) -> tuple[UserQueryData | None, bool]:
        """The viewer's data and whether it is stale (``None``: no such user).

        Waits ``stale_after_s`` for the shard; if it has not answered (or failed) by then and an earlier
        answer for the viewer is kept, returns that one with ``True``. Without one, waits up to
        ``give_up_after_s`` in all, then raises :class:`UserStoreUnavailable`.
        """
        call = asyncio.ensure_future(uncancelled(self._shard(user_id).query_data.remote(user_id, self._history_length)))
        try:
            done, _ = await asyncio.wait({call}, timeout=stale_after_s)
            if not (done and call.exception() is None) and (stale := self.last_known.get(user_id)) is not None:
                return _QUERY_DEC.decode(stale), True
            if not done:
                await asyncio.wait({call}, timeout=max(give_up_after_s - stale_after_s, 0.0))
            if not call.done() or call.exception() is not None:
                why = type(call.exception()).__name__ if call.done() else f"no answer in {give_up_after_s:g} s"
                raise UserStoreUnavailable(f"the user store shard of user {user_id} is unavailable ({why})")
            blob = call.result()
        finally:
            if not call.done():
                call.cancel()
        data = _QUERY_DEC.decode(blob)
        if data is not None:
            self.last_known.put(user_id, blob)
        return data, False

    async def user_features(self, user_id: int) -> UserFeatures:
        data = await self.query_data(user_id)
        return data.features if data is not None else UserFeatures()

    async def engagement_history(self, user_id: int, limit: int) -> tuple[HistoryItem, ...]:
        data = await self.query_data(user_id)
        return data.history[-limit:] if data is not None and limit > 0 else ()

    async def record_served(self, user_id: int, post_ids: Sequence[int], served_at_ms: int) -> None:
        await uncancelled(self._shard(user_id).apply.remote([Served(user_id, tuple(post_ids), served_at_ms)], True))

    async def profiles(self, user_ids: Sequence[int]) -> dict[int, UserProfile]:
        by_shard = group_by_shard(user_ids, len(self._shards))
        answers = await asyncio.gather(*(uncancelled(self._shards[s].profiles.remote(ids)) for s, ids in by_shard.items()))
        out: dict[int, UserProfile] = {}
        for answer in answers:
            out.update(_PROFILES_DEC.decode(answer))
        return out

    async def write(self, events: Sequence[UserEvent]) -> None:
        """Apply ``events`` on every shard they touch, all or nothing; raises ``WriteRefused``.

        One shard: one call (check + log + apply). Several: every shard
        checks first (a refused write changes nothing), then the lowest shard
        logs the whole write as one batch and applies its part, then the others
        apply theirs without logging (they replay the coordinator's log after a restart).
        """
        by_shard: dict[int, list[UserEvent]] = defaultdict(list)
        for event in events:
            shards = {shard_for(u, len(self._shards)) for u in (*event_user_ids(event), *required_users(event))}
            for s in shards:
                by_shard[s].append(event)
        shard = self._shards
        if len(by_shard) <= 1:
            _raise_first(await asyncio.gather(*(uncancelled(shard[s].apply.remote(evs)) for s, evs in by_shard.items())))
            return
        _raise_first(await asyncio.gather(*(uncancelled(shard[s].check.remote(evs)) for s, evs in by_shard.items())))
        coordinator = min(by_shard)
        _raise_first([await uncancelled(shard[coordinator].apply.remote(list(events), True))])  # durable from here
        others = [s for s in by_shard if s != coordinator]
        _raise_first(await asyncio.gather(*(uncancelled(shard[s].apply.remote(by_shard[s], True, False)) for s in others)))


def _raise_first(refusals: Sequence[tuple[int, str] | None]) -> None:
    for refusal in refusals:
        if refusal is not None:
            raise WriteRefused(*refusal)

