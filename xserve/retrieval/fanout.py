"""Retrieval's one fan-out: encode the user once, ask every shard, merge the top-k.

:class:`RetrievalFanout` satisfies the mixer's retrieval Protocol
(``async retrieve(req) -> list[RetrievedPost]``). Its shards are anything with
``search_async`` (:class:`ShardSearch`): in process, the
:class:`~xserve.retrieval.shard.ShardSearcher` s themselves (tests, the
benchmark), whose searches are awaited together on one event loop (LanceDB's
async API: measured faster than one sync call per thread, see
``docs/retrieval.md``); in the ``Retrieval`` deployment, clients of the
``RetrievalShard`` actors. Each shard returns its
:func:`~xserve.retrieval.merge.shard_quota`, not k.

One request reads the current embedding version once and asks every shard for
that version, so a version switch mid-request cannot mix old and new vectors.

A shard whose search fails (its actor dead or restarting) is left out of that
merge, and counted in :attr:`RetrievalFanout.shards_left_out`: its posts are
missing from the answer, the other shards' are not. Only when no shard
answers does the search fail.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Collection, Sequence
from typing import Protocol

import numpy as np

from xserve import clock
from xserve.config import RetrievalConfig
from xserve.retrieval.merge import hits_to_posts, merge_top_k, shard_quota
from xserve.retrieval.protocols import UserEncoder
from xserve.schema import RetrievalRequest, RetrievedPost, ShardHits
from xserve.sharding import shard_array

__all__ = ["NoShardAnswered", "RetrievalFanout", "ShardSearch", "request_k", "split_excludes"]

log = logging.getLogger(__name__)


class ShardSearch(Protocol):
    """One retrieval shard as the fan-out asks it (``ShardSearcher``, or a client of its actor)."""

    async def search_async(
        self, vector: np.ndarray, k: int, now_ms: int, exclude_ids: Collection[int] = (), version: str | None = None
    ) -> ShardHits:
        """The shard's top-``k`` for ``vector`` in embedding ``version``, without ``exclude_ids``."""
        ...


class NoShardAnswered(RuntimeError):
    """Every shard's search failed: there is nothing to merge."""


def request_k(req: RetrievalRequest, config: RetrievalConfig) -> int:
    """How many posts a request gets: its ``max_results``, or the config's ``top_k`` when 0."""
    if req.max_results < 0:
        raise ValueError(f"RetrievalRequest.max_results must be >= 0, got {req.max_results}")
    return req.max_results or config.top_k


def split_excludes(exclude_ids: Collection[int], num_shards: int) -> list[frozenset[int]]:
    """Route each excluded id to the one shard that can hold it (smaller messages per shard)."""
    if not exclude_ids:
        return [frozenset()] * num_shards
    ids = np.fromiter(exclude_ids, dtype=np.int64, count=len(exclude_ids))
    owner = shard_array(ids, num_shards)
    return [frozenset(ids[owner == s].tolist()) for s in range(num_shards)]


class RetrievalFanout:
    """The fan-out over the shards; see the module docstring."""

    def __init__(
        self,
        shards: Sequence[ShardSearch],
        user_encoder: UserEncoder,
        config: RetrievalConfig,
        current_version: Callable[[], str | None],
        clock_ms: Callable[[], int] = clock.now_ms,
    ):
        self.shards = list(shards)
        self.user_encoder = user_encoder
        self.config = config
        self.current_version = current_version
        self.clock_ms = clock_ms
        self.shards_left_out = [0] * len(self.shards)  # searches merged without this shard (it failed)
        # the loop the sync entry points (search_vector, retrieve_sync) run the fan-out on; started on first use
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._loop_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RetrievalFanout(shards={len(self.shards)}, top_k={self.config.top_k})"

    def close(self) -> None:
        if self._loop is None or self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join()
        self._loop.close()

    async def search_vector_async(
        self, vector: np.ndarray, k: int, now_ms: int, exclude_ids: Collection[int] = (), version: str | None = None
    ) -> ShardHits:
        """Global top-``k`` for one user vector: every shard's quota awaited together, then the answers merged.

        A shard that fails is left out (see the module docstring); raises :class:`NoShardAnswered` when all do.
        """
        version = version or self.current_version()
        excludes = split_excludes(exclude_ids, len(self.shards))
        quota = shard_quota(k, len(self.shards), self.config.shard_quota_sigmas)
        parts = await asyncio.gather(
            *(s.search_async(vector, quota, now_ms, excludes[i], version) for i, s in enumerate(self.shards)),
            return_exceptions=True,
        )
        answered = []
        for i, part in enumerate(parts):
            if isinstance(part, Exception):
                self.shards_left_out[i] += 1
                log.debug("retrieval shard %d left out: %s", i, type(part).__name__)
            elif isinstance(part, BaseException):  # cancelled, or the process stopping: not a shard's failure
                raise part
            else:
                answered.append(part)
        if not answered:
            raise NoShardAnswered("no retrieval shard answered: every shard is down or restarting") from (
                parts[-1] if parts else None
            )
        return merge_top_k(answered, k)

    def search_vector(
        self, vector: np.ndarray, k: int, now_ms: int, exclude_ids: Collection[int] = (), version: str | None = None
    ) -> ShardHits:
        """:meth:`search_vector_async` from synchronous code (not from inside an event loop)."""
        coro = self.search_vector_async(vector, k, now_ms, exclude_ids, version)
        return asyncio.run_coroutine_threadsafe(coro, self._sync_loop()).result()

    def _sync_loop(self) -> asyncio.AbstractEventLoop:
        with self._loop_lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._loop_thread = threading.Thread(target=self._loop.run_forever, name="retrieval-fanout", daemon=True)
                self._loop_thread.start()
            return self._loop

    def retrieve_sync(self, req: RetrievalRequest) -> list[RetrievedPost]:
        vector = self.user_encoder.encode_users([req])[0]  # (D,)
        now_ms = req.now_ms or self.clock_ms()
        return hits_to_posts(self.search_vector(vector, request_k(req, self.config), now_ms, req.exclude_ids))

    async def retrieve(self, req: RetrievalRequest) -> list[RetrievedPost]:
        k = request_k(req, self.config)
        vector = (await asyncio.to_thread(self.user_encoder.encode_users, [req]))[0]  # the tower is CPU work: off the loop
        now_ms = req.now_ms or self.clock_ms()
        return hits_to_posts(await self.search_vector_async(vector, k, now_ms, req.exclude_ids))
