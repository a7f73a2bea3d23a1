"""uncancelled: a caller that stops waiting leaves the actor task to run (and the actor usable); resent: a
call sent again while its actor is unreachable, for a bounded time."""

from __future__ import annotations

import asyncio

import pytest


@pytest.mark.ray
def test_a_timed_out_caller_does_not_cancel_the_actor_task(ray_cluster):
    from xserve.actors.calls import uncancelled

    @ray_cluster.remote
    class Counter:
        def __init__(self) -> None:
            self.n = 0

        def slow_add(self) -> int:
            import time

            time.sleep(0.5)
            self.n += 1
            return self.n

        def get(self) -> int:
            return self.n

    counter = Counter.remote()

    async def scenario() -> int:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(uncancelled(counter.slow_add.remote()), timeout=0.05)
        with pytest.raises(asyncio.TimeoutError):  # queued behind the first one: would be cancelled unshielded
            await asyncio.wait_for(uncancelled(counter.slow_add.remote()), timeout=0.05)
        return await asyncio.wait_for(uncancelled(counter.get.remote()), timeout=30)

    assert asyncio.run(scenario()) == 2  # both ran; later calls from this caller still answer
    ray_cluster.kill(counter)


def _unavailable_for(n: int, answer: str = "ok"):
    """A call factory whose first ``n`` calls find the actor unreachable (as a call to an actor on a lost node
    does until the GCS declares the node dead), then answer; ``sent`` counts the calls."""
    import ray

    sent = []

    def make_call():
        sent.append(1)

        async def call():
            if len(sent) <= n:
                raise ray.exceptions.ActorUnavailableError("connection refused", None)
            return answer

        return call()

    return make_call, sent


def test_resent_sends_again_while_the_actor_is_unreachable():
    from xserve.actors.calls import resent

    make_call, sent = _unavailable_for(3)
    assert asyncio.run(resent(make_call, wait_s=5, every_s=0.01)) == "ok" and len(sent) == 4


def test_resent_gives_up_after_its_wait_and_the_store_client_says_unavailable():
    import ray

    from xserve.actors.calls import resent
    from xserve.deployments.clients import StoreUnavailable, _store_call

    make_call, sent = _unavailable_for(10**6)
    with pytest.raises(ray.exceptions.ActorUnavailableError):
        asyncio.run(resent(make_call, wait_s=0.2, every_s=0.05))
    assert 2 <= len(sent) <= 6
    with pytest.raises(StoreUnavailable, match="unreachable for 0.1 s"):
        asyncio.run(_store_call(make_call, 0.1))
    with pytest.raises(ray.exceptions.ActorUnavailableError):  # no wait: the feed's stages fail at once
        asyncio.run(_store_call(_unavailable_for(1)[0], 0.0))


def test_cancelling_the_caller_stops_the_resending():
    from xserve.actors.calls import resent

    make_call, sent = _unavailable_for(10**6)

    async def scenario() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(resent(make_call, wait_s=30, every_s=0.05), timeout=0.2)
        before = len(sent)
        await asyncio.sleep(0.2)
        assert len(sent) == before

    asyncio.run(scenario())
