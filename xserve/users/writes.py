"""A write to the user store, applied on every shard it touches, all or nothing (pure; no Ray).

A write that touches users of one shard is one call to that shard (check,
log, apply). A write that touches users of several shards (a follow across
shards, an engagement batch of several users) is checked by every shard first,
so a refused write changes nothing; then it is logged once, whole, as one
batch, by the lowest of those shards (the coordinator), which applies its
part; then the others apply theirs without logging it. Every shard replays
every shard's log on start (:func:`xserve.users.shard.replay_user_logs`), so a
write the coordinator logged is on every shard after a crash, whichever
shards had applied it before: every shard has it or none does.

:class:`ShardedWrite` plans and runs that protocol over any
:class:`UserShardCalls` (the Ray client's shard actors, or plain
:class:`~xserve.users.shard.UserShard` s in tests).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from xserve.schema import EdgeSet, EdgeUnset, EngagementRecorded, MutedKeywordsSet, Served, UserEvent, UserUpserted
from xserve.sharding import shard_for
from xserve.users.store import event_user_ids

__all__ = ["Refusal", "ShardedWrite", "UserShardCalls", "WriteRefused", "raise_first", "required_users"]

Refusal = tuple[int, str]  # (HTTP status, reason): 404 an unknown user, 409 a cap


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


def raise_first(refusals: Sequence[Refusal | None]) -> None:
    """Raise :class:`WriteRefused` for the first refusal among the shards' answers, if any."""
    for refusal in refusals:
        if refusal is not None:
            raise WriteRefused(*refusal)


class UserShardCalls(Protocol):
    """The user-store shards, by index, as the write protocol reaches them."""

    async def check(self, shard: int, events: Sequence[UserEvent]) -> Refusal | None:
        """The first refusal of ``events`` by ``shard``, or None; changes nothing."""
        ...

    async def apply(self, shard: int, events: Sequence[UserEvent], checked: bool, log: bool) -> Refusal | None:
        """Check (unless ``checked``), log (if ``log``) and apply ``events`` on ``shard``; None once durable."""
        ...


@dataclass(frozen=True, slots=True)
class ShardedWrite:
    """One write split over the shards it touches (see the module docstring)."""

    events: tuple[UserEvent, ...]  # the whole write, in order (what the coordinator logs)
    by_shard: dict[int, list[UserEvent]]  # shard -> the events naming its users, in order

    @classmethod
    def plan(cls, events: Sequence[UserEvent], num_shards: int) -> ShardedWrite:
        """Group ``events`` by the shards of the users they change or require."""
        by_shard: dict[int, list[UserEvent]] = defaultdict(list)
        for event in events:
            for s in {shard_for(u, num_shards) for u in (*event_user_ids(event), *required_users(event))}:
                by_shard[s].append(event)
        return cls(tuple(events), dict(by_shard))

    @property
    def coordinator(self) -> int:
        """The shard that logs a multi-shard write: the lowest it touches."""
        return min(self.by_shard)

    async def run(self, shards: UserShardCalls) -> None:
        """Apply the write on every shard it touches, all or nothing; raises :class:`WriteRefused`."""
        if len(self.by_shard) <= 1:
            raise_first(await asyncio.gather(*(shards.apply(s, evs, False, True) for s, evs in self.by_shard.items())))
            return
        raise_first(await asyncio.gather(*(shards.check(s, evs) for s, evs in self.by_shard.items())))
        coordinator = self.coordinator
        raise_first([await shards.apply(coordinator, self.events, True, True)])  # durable from here
        others = [s for s in self.by_shard if s != coordinator]
        raise_first(await asyncio.gather(*(shards.apply(s, self.by_shard[s], True, False) for s in others)))
