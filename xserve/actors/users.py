"""``UserStoreShard``: one shard of the user store (users sharded by id) as a Ray actor, a thin shell.

All logic is in :class:`xserve.users.shard.UserShard` (load the tables, replay
every shard's log, check, log then apply) and :mod:`xserve.users.writes` (a
write across shards, all or nothing); the client that drives it over Ray is
:class:`xserve.deployments.clients.UserStoreClient`.

Results cross the Ray boundary as msgpack bytes (built once, decoded by the
client) rather than pickled Structs: cheaper for the feed's hot calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import ray

from xserve.config import XServeConfig
from xserve.schema import FeedImpressions, FeedSeen, Served, UserEvent
from xserve.users.shard import UserShard
from xserve.users.writes import Refusal

__all__ = ["UserStoreShard"]


# max_restarts=-1: the constructor only reads the data directory, so a restart always rebuilds the same
# state; a finite budget would run out over repeated faults and leave the shard dead for good.
# allow_out_of_order_execution: still one call at a time, but no per-caller sequence numbers: with them, a
# cancelled call (Serve cancels a request's child tasks when its client goes away) queued while the actor
# was being created left every later call from that ingress waiting for good (chaos.py, full_restart).
# Every caller awaits a write before it sends the next, so no order it relies on is lost.
@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=1, allow_out_of_order_execution=True)
class UserStoreShard:
    """One shard of the user store: a :class:`~xserve.users.shard.UserShard` behind an actor."""

    def __init__(self, config: XServeConfig, shard: int, num_shards: int) -> None:
        self._enc = msgspec.msgpack.Encoder()  # per instance: Ray may pickle the class by value
        self._shard = UserShard.open(config, shard, num_shards)

    def stats(self) -> dict[str, Any]:
        return self._shard.stats()

    def query_data(self, user_id: int, history_limit: int, trim_block: int = 1) -> bytes:
        return self._enc.encode(self._shard.query_data(user_id, history_limit, trim_block))

    def profiles(self, user_ids: Sequence[int]) -> bytes:
        return self._enc.encode(self._shard.profiles(user_ids))

    def check(self, events: Sequence[UserEvent]) -> Refusal | None:
        return self._shard.check(events)

    def apply(self, events: Sequence[UserEvent], checked: bool = False, log: bool = True) -> Refusal | None:
        return self._shard.apply(events, checked, log)

    def record_served(self, served: Served, impressions: FeedImpressions | None = None) -> None:
        self._shard.record_served(served, impressions)

    def record_seen(self, reports: Sequence[FeedSeen]) -> bool:
        return self._shard.record_seen(reports)
