"""``uncancelled(ref)``: await a Ray actor call so that giving up on it does not cancel it.

A caller that stops waiting (a pipeline stage past its timeout, the feed's
wait for the user store) cancels its coroutine, and awaiting an ``ObjectRef``
directly turns that into cancelling the actor task. A cancelled queued task
of an in-order actor can leave the caller's later calls to that actor waiting
for good (Ray tracks cancelled attempts by task id, ray-project/ray#66020;
``scripts/chaos.py``'s full restart hit it). The calls made here are short, so
the safe side is to let the task run and drop its answer; a write that was
sent is then applied or not by the actor alone, never withdrawn halfway.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["uncancelled"]


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
