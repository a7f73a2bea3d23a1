"""uncancelled: a caller that stops waiting leaves the actor task to run (and the actor usable)."""

from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.ray


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
