"""``uncancelled(ref)``: await a Ray actor call so that giving up on it does not cancel it.

A caller that stops waiting (a pipeline stage past its timeout, the feed's
wait for the user store) cancels its coroutine, and awaiting an ``ObjectRef``
directly turns that into cancelling the actor task. A cancelled queued task
of an in-order actor can leave the caller's later calls to that actor waiting
for good (Ray tracks cancelled attempts by task id, ray-project/ray#66020;
``scripts/chaos.py``'s full restart hit it). The calls made here are short, so
the safe side is to let the task run and drop its answer; a write that was
sent is then applied or not by the actor alone, never withdrawn halfway.

``resent(make_call, wait_s)``: the same, sent again while the actor is
unreachable. A restarting actor queues its calls, but an actor whose node was
lost looks alive until the GCS declares the node dead (Ray's health check:
about 15 s by default), and every call to it meanwhile fails at once with
``ActorUnavailableError`` (``scripts/cluster_check.py`` found writes answered
500 that way). Resending until the actor answers again, for a bounded time,
turns that window into a wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

__all__ = ["resent", "uncancelled"]


async def uncancelled(ref: Any) -> Any:
    """The result of ``ref`` (an ``ObjectRef``); cancelling the caller leaves the Ray task alone."""
    task = asyncio.ensure_future(_wait(ref))
    task.add_done_callback(_consume)
    return await asyncio.shield(task)


async def _wait(ref: Any) -> Any:
    return await ref


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a late failure nobody waits for is not logged as unhandled


async def resent(make_call: Callable[[], Any], wait_s: float, every_s: float = 0.25) -> Any:
    """``uncancelled(make_call())``, sent again every ``every_s`` while the actor is unavailable, for up to
    ``wait_s``; then the last ``ActorUnavailableError`` is raised. Cancelling the caller stops the resending."""
    import ray

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return await uncancelled(make_call())
        except ray.exceptions.ActorUnavailableError:
            if time.monotonic() + every_s > deadline:
                raise
            await asyncio.sleep(every_s)
