"""Pure helpers for the sharded in-network query: plan the fan-out, merge the answers.

The Ray-facing ``ThunderClient`` (``xserve.deployments.clients``) uses these, and so
does the property test that proves a sharded fan-out answers exactly what one
unsharded :class:`~xserve.thunder.store.ThunderStore` answers.

A shard whose query fails (every replica dead, at capacity, or silent past
``shard_timeout_s``: calls to a restarting actor wait for its restart) is
left out of the merge and named in the answer's ``left_out``, which the feed
reports in its ``degraded`` list: its authors' posts are missing, the other
shards' are not (as retrieval leaves out a failed shard). Only when no shard
answers does the query fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

from xserve.config import ThunderConfig
from xserve.schema import InNetworkRequest, InNetworkResponse, LightPost
from xserve.sharding import shards_for
from xserve.thunder.store import ThunderStore, merge_newest_first

__all__ = [
    "InProcessThunder", "fan_out_merge", "first_to_answer", "max_results_for", "merge_answered", "shard_part", "shards_to_ask",
]

T = TypeVar("T")


def max_results_for(req: InNetworkRequest, config: ThunderConfig) -> int:
    """The request's ``max_results``, or the config default (videos or posts) when <= 0."""
    if req.max_results > 0:
        return req.max_results
    return config.max_videos_to_return if req.video_only else config.max_posts_to_return


def shards_to_ask(req: InNetworkRequest, config: ThunderConfig) -> list[int]:
    """Sorted shard indices owning at least one of the (truncated) followed authors."""
    return sorted(shards_for(req.followed_ids[: config.max_input_list_size], config.num_shards))


def fan_out_merge(answers: Iterable[list[LightPost]], req: InNetworkRequest, config: ThunderConfig) -> list[LightPost]:
    """Merge per-shard answers newest first and truncate.

    Each shard already keeps its newest ``max_results``; authors never span
    shards, so the global newest ``max_results`` are among them.
    """
    merged = [p for answer in answers for p in answer]
    return merge_newest_first(merged, max_results_for(req, config))


def shard_part(shard: int) -> str:
    """How a left-out shard is named in an answer's ``left_out`` (and so in a feed's ``degraded``)."""
    return f"thunder_shard_{shard}"


def merge_answered(
    shards: Sequence[int], outcomes: Sequence[list[LightPost] | BaseException], req: InNetworkRequest, config: ThunderConfig
) -> InNetworkResponse:
    """Merge the answers of the shards that answered; each shard whose ask failed is left out and named.

    ``outcomes[i]`` is shard ``shards[i]``'s answer or the exception its ask
    raised. A cancellation (or any ``BaseException`` that is not an
    ``Exception``) is not a shard's failure and propagates; when no shard
    answered, the first shard's failure is raised (e.g. ``ThunderAtCapacity``:
    the caller may retry).
    """
    answers: list[list[LightPost]] = []
    left_out: list[str] = []
    for shard, outcome in zip(shards, outcomes, strict=True):
        if isinstance(outcome, Exception):
            left_out.append(shard_part(shard))
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            answers.append(outcome)
    if outcomes and not answers:
        raise next(o for o in outcomes if isinstance(o, Exception))
    return InNetworkResponse(fan_out_merge(answers, req, config), tuple(left_out))


async def first_to_answer(
    calls: Sequence[Callable[[], Awaitable[T]]], timeout_s: float, passes_on: tuple[type[Exception], ...]
) -> T:
    """The answer of the first of a shard's replicas (``calls``, in the order to try) to answer, within ``timeout_s``.

    A replica that fails with one of ``passes_on`` (at capacity, unavailable),
    or has not answered within its share of the time left (the time left over
    the replicas left), passes to the next; the last one gets all the time
    left. Raises the last failure (``TimeoutError`` when out of time); any
    other exception at once. A call given up on is cancelled: a caller whose
    work must go on passes calls that shield it (the actor client's calls use
    ``uncancelled``, so the actor's task still runs).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    for i, call in enumerate(calls):
        share = (deadline - loop.time()) / (len(calls) - i)
        try:
            return await asyncio.wait_for(call(), max(share, 0.0))
        except (TimeoutError, *passes_on):
            if i == len(calls) - 1:
                raise
    raise ValueError("a shard needs at least one replica to ask")


class InProcessThunder:
    """The mixer's ``InNetworkClient`` Protocol over one in-process, unsharded :class:`ThunderStore`.

    For single-process runs and the end-to-end golden test; ``clock_ms`` is
    the time source (passed in, never read from a hidden global).
    """

    def __init__(self, store: ThunderStore, clock_ms: Callable[[], int]) -> None:
        self.store = store
        self.clock_ms = clock_ms

    def __repr__(self) -> str:
        return f"InProcessThunder({self.store!r})"

    async def in_network_posts(self, req: InNetworkRequest) -> InNetworkResponse:
        return InNetworkResponse(self.store.in_network_posts(req, self.clock_ms()))
