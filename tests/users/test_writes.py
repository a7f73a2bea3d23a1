"""A user-store write across shards (ShardedWrite over plain UserShards and their real event logs): grouping,
the coordinator rule, all or nothing, and the replay that makes it so across a crash. No Ray."""

from __future__ import annotations

import asyncio

import pytest

from xserve.config import load_config
from xserve.schema import Action, EdgeKind, EdgeSet, Engagement, EngagementRecorded, UserEvent, UserUpserted
from xserve.sharding import shard_for
from xserve.storage.layout import DataDirLayout
from xserve.storage.log.event_log import EventLog
from xserve.users import UserStore
from xserve.users.shard import UserShard, replay_user_logs
from xserve.users.writes import ShardedWrite, WriteRefused, required_users

N = 2
U = next(i for i in range(1, 100) if shard_for(i, N) == 0)  # a user of shard 0
T = next(i for i in range(1, 100) if shard_for(i, N) == 1)  # a user of shard 1
U2 = next(i for i in range(U + 1, 200) if shard_for(i, N) == 0)  # another user of shard 0


def config(tmp_path, **serving):
    return load_config(
        environ={}, overrides={"storage": {"data_dir": str(tmp_path), "fsync": False}, "serving": {"num_user_shards": N, **serving}}
    )


class InProcessShards:
    """``UserShardCalls`` over plain shards, recording each call; ``crash_on`` shards fail every apply."""

    def __init__(self, shards: list[UserShard], crash_on: frozenset[int] = frozenset()) -> None:
        self.shards = shards
        self.crash_on = crash_on
        self.calls: list[tuple] = []

    async def check(self, shard, events):
        self.calls.append(("check", shard))
        return self.shards[shard].check(events)

    async def apply(self, shard, events, checked, log):
        self.calls.append(("apply", shard, checked, log))
        if shard in self.crash_on:
            raise ConnectionError(f"shard {shard} died")
        return self.shards[shard].apply(events, checked, log)


def open_shards(cfg) -> list[UserShard]:
    return [UserShard.open(cfg, s, N) for s in range(N)]


def close(shards: list[UserShard]) -> None:
    for shard in shards:
        shard.close()


def write(shards: InProcessShards, events: list[UserEvent]) -> None:
    asyncio.run(ShardedWrite.plan(events, N).run(shards))


def logged(cfg, shard: int) -> list[UserEvent]:
    return [e for _, _, e in EventLog(DataDirLayout(cfg.storage.data_dir).user_log(shard, N), event_type=UserEvent).read()]


def test_plan_groups_each_event_by_the_shards_of_the_users_it_changes_or_requires():
    follow, block = EdgeSet(U, T, EdgeKind.FOLLOW), EdgeSet(U, T, EdgeKind.BLOCK)
    engaged = EngagementRecorded(Engagement(U2, 10, T, Action.FAVORITE, 1))
    plan = ShardedWrite.plan([UserUpserted(T, "t"), follow, block, engaged], N)
    # a follow changes the target's follower count; a block only needs the target to exist
    assert plan.by_shard == {1: [UserUpserted(T, "t"), follow, block], 0: [follow, block, engaged]}
    assert plan.coordinator == 0 and required_users(block) == (U, T) and required_users(UserUpserted(T)) == ()
    assert ShardedWrite.plan([], N).by_shard == {}


def test_a_write_on_one_shard_is_one_call(tmp_path):
    cfg = config(tmp_path)
    calls = InProcessShards(open_shards(cfg))
    write(calls, [UserUpserted(U, "u"), UserUpserted(U2, "u2")])
    calls.calls.clear()
    write(calls, [EdgeSet(U, U2, EdgeKind.FOLLOW)])
    assert calls.calls == [("apply", 0, False, True)]
    assert calls.shards[0].store.features(U).followed_user_ids == {U2}
    close(calls.shards)


def test_a_write_across_shards_is_checked_everywhere_then_logged_once_by_the_coordinator(tmp_path):
    cfg = config(tmp_path)
    calls = InProcessShards(open_shards(cfg))
    write(calls, [UserUpserted(U, "u")])
    write(calls, [UserUpserted(T, "t")])
    calls.calls.clear()
    follow = EdgeSet(U, T, EdgeKind.FOLLOW)
    write(calls, [follow])
    assert calls.calls == [("check", 0), ("check", 1), ("apply", 0, True, True), ("apply", 1, True, False)]
    assert calls.shards[0].store.features(U).followed_user_ids == {T}
    assert calls.shards[1].store.profiles([T])[T].followers_count == 1
    assert logged(cfg, 0)[-1] == follow and follow not in logged(cfg, 1)  # the coordinator's log alone has it
    close(calls.shards)


def test_a_refused_write_changes_nothing_on_any_shard(tmp_path):
    cfg = config(tmp_path, max_edges_per_kind=1)
    calls = InProcessShards(open_shards(cfg))
    write(calls, [UserUpserted(U, "u"), UserUpserted(U2, "u2")])
    write(calls, [UserUpserted(T, "t")])
    write(calls, [EdgeSet(U, U2, EdgeKind.FOLLOW)])
    before = [list(logged(cfg, s)) for s in range(N)]
    calls.calls.clear()
    with pytest.raises(WriteRefused) as unknown:
        write(calls, [EdgeSet(T, U, EdgeKind.BLOCK), EdgeSet(T, 999_999, EdgeKind.BLOCK)])
    assert unknown.value.status == 404 and "999999" in str(unknown.value)
    with pytest.raises(WriteRefused) as capped:  # U follows U2 already: a second follow is over the cap
        write(calls, [EdgeSet(T, U2, EdgeKind.FOLLOW), EdgeSet(U, T, EdgeKind.FOLLOW)])
    assert capped.value.status == 409 and "max_edges_per_kind" in str(capped.value)
    assert all(call[0] == "check" for call in calls.calls)  # refused before anything was applied
    assert [logged(cfg, s) for s in range(N)] == before
    assert calls.shards[1].store.features(T).blocked_user_ids == frozenset()
    assert calls.shards[0].store.profiles([U2])[U2].followers_count == 1
    close(calls.shards)


def test_a_write_the_coordinator_logged_is_on_every_shard_after_a_crash(tmp_path):
    """The other shard died before applying its part: after the restart it has it, from the coordinator's log."""
    cfg = config(tmp_path)
    calls = InProcessShards(open_shards(cfg))
    write(calls, [UserUpserted(U, "u")])
    write(calls, [UserUpserted(T, "t")])
    calls.crash_on = frozenset({1})
    with pytest.raises(ConnectionError):
        write(calls, [EdgeSet(U, T, EdgeKind.FOLLOW)])
    assert calls.shards[1].store.profiles([T])[T].followers_count == 0  # not applied there yet
    close(calls.shards)
    again = open_shards(cfg)
    assert again[0].store.features(U).followed_user_ids == {T}
    assert again[1].store.profiles([T])[T].followers_count == 1
    close(again)


def test_a_write_across_user_shards_is_replayed_by_every_shard_from_the_coordinators_log(tmp_path):
    """The coordinator logged a cross-shard follow and the process died before the other shard applied it:
    after the restart both shards have it (every shard replays every user-store log)."""
    cfg = config(tmp_path)
    u, t = U, T
    with EventLog(tmp_path / "users" / "shard-0-of-2", writer=True, fsync=False, event_type=UserEvent) as log:
        log.append([UserUpserted(u, "u"), UserUpserted(t, "t"), EdgeSet(u, t, EdgeKind.FOLLOW)], 1)
    stores = [UserStore(cfg.serving, cfg.mixer, s, 2) for s in range(2)]
    for store in stores:
        assert replay_user_logs(tmp_path / "users", store.apply) == 3
    assert stores[0].features(u).followed_user_ids == {t}
    assert stores[1].profiles([t])[t].followers_count == 1
