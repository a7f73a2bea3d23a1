import asyncio

import msgspec
import pytest

from tests.thunder.factories import HOUR, NOW, created, deleted, ids, post, request
from xserve.config import ThunderConfig
from xserve.schema import PostCreated
from xserve.storage.log.event_log import EventLog
from xserve.thunder.ingest import Ingestor
from xserve.thunder.store import ThunderStore
from xserve.thunder.replica import AdmissionGate, ShardReplica, ThunderAtCapacity

CFG = ThunderConfig(num_shards=2)
enc = msgspec.json.encode


class ReplicaSink:
    """In-process sink over a ShardReplica (the actor's adapter does the same over Ray)."""

    def __init__(self, replica: ShardReplica, fail: bool = False) -> None:
        self.replica, self.fail, self.name = replica, fail, replica.name

    async def apply(self, events, first, nxt, now_ms):
        if self.fail:
            raise ConnectionError("shard down")
        self.replica.apply(events, first, nxt, now_ms)


def replicas(log, n=2):
    return [ShardReplica(CFG, EventLog(log.directory), i, lambda: NOW, name=f"shard{i}") for i in range(n)]


def answer(reps, followed, **kw):
    from xserve.thunder.fanout import fan_out_merge

    req = request(followed, **kw)
    return ids(fan_out_merge([r.in_network_posts(req, NOW) for r in reps], req, CFG))


def test_rejects_malformed_events_with_reasons_and_counts(tmp_path):
    log = EventLog(tmp_path, writer=True, fsync=False)
    ing = Ingestor(CFG, log)
    good = created(post(1, 7))[0]
    items = [
        enc(good),
        b"{not json",
        enc({"type": "post_created", "post": {"post_id": 0, "author_id": 7, "created_at_ms": NOW}}),  # id must be > 0
        enc({"type": "post_exploded", "post_id": 3}),
        {"type": "post_deleted", "post_id": 5, "deleted_at_ms": NOW - 1, "surprise": 1},  # unknown field
        PostCreated(post(6, 7, NOW + CFG.max_clock_skew_ms + 1)),  # from the future, beyond the clock skew allowed
        PostCreated(post(8, 7, NOW - 49 * HOUR)),  # older than retention
        PostCreated(post(9, -4)),  # built in Python: bounds re-checked
        12345,
        {"type": "post_deleted", "post_id": 5, "deleted_at_ms": NOW - 1},
    ]
    res = asyncio.run(ing.ingest(items, NOW))
    assert res.accepted == 2 and (res.first_offset, res.next_offset) == (0, 2)
    reasons = {r.index: r.reason for r in res.rejected}
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert reasons[1].startswith("invalid: JSON is malformed")
    assert "post_id" in reasons[2] and ">= 1" in reasons[2]
    assert "post_exploded" in reasons[3]
    assert "surprise" in reasons[4]
    assert reasons[5].startswith("future: created_at_ms")
    assert reasons[6].startswith("stale: created_at_ms")
    assert "author_id" in reasons[7]
    assert "got int" in reasons[8]
    assert ing.counts == {"accepted": 2, "rejected_invalid": 6, "rejected_future": 1, "rejected_stale": 1}
    assert [e for _, _, e in log.read()] == [good, deleted(5)]  # only accepted events were logged
    with pytest.raises(ValueError, match="max_ingest_batch"):
        asyncio.run(Ingestor(ThunderConfig(max_ingest_batch=1), log).ingest([good, good], NOW))


def test_logged_before_applied_and_lagging_shard_catches_up(tmp_path):
    log = EventLog(tmp_path, writer=True, fsync=False)
    reps = replicas(log)
    sinks = [ReplicaSink(r) for r in reps]
    ing = Ingestor(CFG, log, sinks)
    authors = range(1, 9)
    asyncio.run(ing.ingest(created(*(post(a, a, NOW - a) for a in authors)), NOW))
    sinks[1].fail = True  # shard 1 misses a batch ...
    res = asyncio.run(ing.ingest(created(*(post(100 + a, a, NOW - 10 - a) for a in authors)), NOW))
    assert res.lagging_shards == ("shard1",) and res.accepted == 8
    sinks[1].fail = False  # ... and fills the gap from the log with the next one
    asyncio.run(ing.ingest([deleted(3)], NOW))
    expected = ThunderStore(CFG)
    expected.apply([e for _, _, e in log.read()], NOW)
    assert answer(reps, authors) == ids(expected.in_network_posts(request(authors), NOW))
    assert reps[1].next_offset == log.next_offset == 17
    # a batch seen twice (a retried call) changes nothing
    assert reps[0].apply([deleted(4)], 16, 17, NOW) == 0


def test_rebuild_from_log_gives_same_answers_and_deleted_stays_deleted(tmp_path):
    log = EventLog(tmp_path, writer=True, fsync=False)
    reps = replicas(log)
    ing = Ingestor(CFG, log, [ReplicaSink(r) for r in reps])
    asyncio.run(ing.ingest(created(*(post(i, i % 5 + 1, NOW - i) for i in range(1, 40))), NOW))
    asyncio.run(ing.ingest([deleted(7), deleted(12)], NOW))
    before = answer(reps, range(1, 6))
    assert 7 not in before and 12 not in before and len(before) == 37
    reborn = replicas(log)
    for r in reborn:
        assert r.rebuild() == 41
    assert answer(reborn, range(1, 6)) == before
    # a delete of a post rebuilt from the log, then the create replayed again: still deleted
    asyncio.run(Ingestor(CFG, log, [ReplicaSink(r) for r in reborn]).ingest(created(post(7, 3, NOW - 7)), NOW))
    assert 7 not in answer(reborn, range(1, 6))


def test_a_post_from_a_clock_ahead_within_the_skew_is_clamped_to_now_and_counted(tmp_path):
    # The API's node stamps a post by its own clock; one running ahead of Thunder's must not lose the post.
    log = EventLog(tmp_path, writer=True, fsync=False)
    rep = ShardReplica(ThunderConfig(num_shards=1), EventLog(tmp_path), 0, lambda: NOW, name="shard0")
    ing = Ingestor(ThunderConfig(num_shards=1), log, [ReplicaSink(rep)])
    res = asyncio.run(ing.ingest(created(post(1, 7, NOW + 1_000)), NOW))
    assert (res.accepted, res.rejected) == (1, ())
    assert ids(rep.in_network_posts(request([7]), NOW)) == [1]
    assert [e.post.created_at_ms for _, _, e in log.read()] == [NOW]  # logged (and applied) as of now
    assert ing.counts == {"accepted": 1, "clamped_future": 1}

    # beyond the configured skew: still rejected and counted; a delete is clamped alike
    cfg = ThunderConfig(num_shards=1, max_clock_skew_ms=5_000)
    ing = Ingestor(cfg, log)
    res = asyncio.run(ing.ingest(created(post(2, 7, NOW + 5_000), post(3, 7, NOW + 5_001)) + [deleted(1, NOW + 10)], NOW))
    assert res.accepted == 2 and [r.index for r in res.rejected] == [1]
    assert res.rejected[0].reason == f"future: created_at_ms {NOW + 5_001} is more than max_clock_skew_ms=5000 after now ({NOW})"
    assert [e for _, _, e in log.read(1)] == [created(post(2, 7, NOW))[0], deleted(1, NOW)]
    assert ing.counts == {"accepted": 2, "clamped_future": 2, "rejected_future": 1}


def test_admission_gate_refuses_beyond_limit_immediately():
    gate = AdmissionGate(2, "shard 0")
    with gate, gate:
        with pytest.raises(ThunderAtCapacity, match="shard 0 at capacity .* retry"):
            with gate:
                pass
    assert (gate.in_flight, gate.rejected) == (0, 1)
    with gate:
        assert gate.in_flight == 1
