"""The pure half of Thunder's fan-out: which shards to ask, and the merge that leaves out a failed shard."""

import asyncio

import pytest

from tests.thunder.factories import NOW, created, ids, post, request
from xserve.config import ThunderConfig
from xserve.thunder.fanout import first_to_answer, merge_answered
from xserve.thunder.store import ThunderStore

CFG = ThunderConfig(num_shards=3)


def shard_answers(followed, **kw):
    """Each shard's answer to ``request(followed)`` over posts 1..9 of authors 1..9 (post i by author i)."""
    req = request(followed, **kw)
    stores = [ThunderStore(CFG, s, CFG.num_shards) for s in range(CFG.num_shards)]
    for s in stores:
        s.apply(created(*(post(i, i, NOW - i) for i in range(1, 10))), NOW)
    return req, [s.in_network_posts(req, NOW) for s in stores]


def test_a_failed_shard_is_left_out_and_named_the_others_are_merged():
    req, answers = shard_answers(range(1, 10))
    failed = ConnectionError("shard 1 died")
    answer = merge_answered([0, 1, 2], [answers[0], failed, answers[2]], req, CFG)
    assert answer.left_out == ("thunder_shard_1",)
    assert ids(answer.posts) == sorted(ids(answers[0] + answers[2]))  # newest first: post i is i ms old
    assert ids(answer.posts) and not set(ids(answer.posts)) & set(ids(answers[1]))

    everyone = merge_answered([0, 1, 2], answers, req, CFG)
    assert everyone.left_out == () and ids(everyone.posts) == list(range(1, 10))
    assert merge_answered([], [], req, CFG).posts == []  # nobody followed on any shard: nothing to ask


def test_no_shard_answered_raises_the_first_failure_and_a_cancellation_is_not_a_shard_failure():
    req, _ = shard_answers([1])
    with pytest.raises(ConnectionError, match="first"):
        merge_answered([0, 2], [ConnectionError("first"), TimeoutError("second")], req, CFG)
    with pytest.raises(asyncio.CancelledError):
        merge_answered([0, 1], [[], asyncio.CancelledError()], req, CFG)


class AtCapacity(Exception):
    pass


async def silent():
    """A replica that never answers (as calls to a restarting actor wait for its restart)."""
    await asyncio.Event().wait()


def test_a_silent_or_refusing_replica_passes_to_the_next_and_a_silent_shard_runs_out_of_time():
    async def answer():
        return ["posts"]

    async def refuse():
        raise AtCapacity("at capacity")

    async def broken():
        raise ValueError("a bug")

    async def run(*calls, timeout_s=0.2):
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            return await first_to_answer(calls, timeout_s, (AtCapacity,)), loop.time() - start
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            return exc, loop.time() - start

    got, took = asyncio.run(run(silent, answer))
    assert got == ["posts"] and took >= 0.1  # the silent one had half the time, the next one answered
    got, took = asyncio.run(run(refuse, answer, timeout_s=2.0))
    assert got == ["posts"] and took < 1.0  # a refusal passes on at once, not after its share
    got, took = asyncio.run(run(silent, silent))
    assert isinstance(got, TimeoutError) and took >= 0.2  # the shard is out of time: left out by the merge
    assert isinstance(asyncio.run(run(refuse, refuse))[0], AtCapacity)
    got, _ = asyncio.run(run(broken, answer))
    assert isinstance(got, ValueError)  # not a replica's "try the next one"
