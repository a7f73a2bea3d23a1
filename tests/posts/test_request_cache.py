"""RequestPostCache: one request's post lookups share one fetch per post; a failed fetch fails every waiter."""

from __future__ import annotations

import asyncio

import pytest

from xserve.posts import RequestPostCache
from xserve.schema import Post

POSTS = {i: Post(post_id=i, author_id=1, created_at_ms=0, text=f"p{i}") for i in range(1, 7)}


class GatedTable:
    """Answers from ``POSTS``, each fetch held until ``release`` is set (so lookups overlap); records the ids."""

    def __init__(self, fail: bool = False) -> None:
        self.fetched: list[list[int]] = []
        self.release = asyncio.Event()
        self.fail = fail

    async def fetch(self, post_ids: list[int]) -> dict[int, Post]:
        self.fetched.append(sorted(post_ids))
        await self.release.wait()
        if self.fail:
            raise ConnectionError("catalog shard down")
        return {i: POSTS[i] for i in post_ids if i in POSTS}


def test_concurrent_lookups_of_the_same_ids_share_one_fetch():
    async def scenario():
        cache, table = RequestPostCache(), GatedTable()
        first = asyncio.ensure_future(cache.get([1, 2, 3, 99], table.fetch))
        second = asyncio.ensure_future(cache.get([2, 3], table.fetch))
        third = asyncio.ensure_future(cache.get([3, 4], table.fetch))
        while len(table.fetched) < 2:  # the first and third lookups have started their fetches
            await asyncio.sleep(0)
        table.release.set()
        a, b, c = await asyncio.gather(first, second, third)
        again = await cache.get([1, 4, 99], table.fetch)  # all answered already (99: known to be absent)
        return table.fetched, a, b, c, again, cache

    fetched, a, b, c, again, cache = asyncio.run(scenario())
    assert fetched == [[1, 2, 3, 99], [4]]  # 2 and 3 were in flight: the second lookup fetched nothing
    assert set(a) == {1, 2, 3} and set(b) == {2, 3} and set(c) == {3, 4} and set(again) == {1, 4}
    assert a[2] is b[2] is POSTS[2]
    assert cache.pending == {}


def test_a_failed_fetch_fails_every_waiter_and_is_fetched_again_next_time():
    async def scenario():
        cache, table = RequestPostCache(), GatedTable(fail=True)
        lookups = [asyncio.ensure_future(cache.get(ids, table.fetch)) for ids in ([1, 2], [2], [1, 2])]
        while not table.fetched:
            await asyncio.sleep(0)
        table.release.set()
        outcomes = await asyncio.gather(*lookups, return_exceptions=True)
        table.fail = False
        return outcomes, await cache.get([1, 2], table.fetch), table.fetched, cache

    outcomes, retried, fetched, cache = asyncio.run(scenario())
    assert all(isinstance(o, ConnectionError) for o in outcomes)
    assert fetched == [[1, 2], [1, 2]]  # one fetch for the three lookups; the failed ids fetched again after
    assert set(retried) == {1, 2} and cache.pending == {}


def test_fetch_errors_reach_the_caller_that_started_the_fetch():
    cache, table = RequestPostCache(), GatedTable(fail=True)
    table.release.set()
    with pytest.raises(ConnectionError):
        asyncio.run(cache.get([5], table.fetch))
    assert 5 not in cache.posts


def test_a_fetch_abandoned_by_its_cancelled_lookup_is_fetched_again_by_the_waiters_not_cancelled():
    # the fetching hydrator's timeout cancelled its lookup; the others waiting on that fetch got its
    # CancelledError, which ended the whole feed (a plain-text 500 from Serve's proxy)
    async def scenario():
        cache, table = RequestPostCache(), GatedTable()
        starter = asyncio.ensure_future(cache.get([1, 2], table.fetch))
        waiter = asyncio.ensure_future(cache.get([2, 3], table.fetch))
        while len(table.fetched) < 2:  # the starter fetches [1, 2], the waiter [3] and waits on 2
            await asyncio.sleep(0)
        starter.cancel()
        await asyncio.sleep(0)
        table.release.set()
        return await waiter, starter, table.fetched, cache

    got, starter, fetched, cache = asyncio.run(scenario())
    assert starter.cancelled() and set(got) == {2, 3}
    assert fetched == [[1, 2], [3], [2]]  # 2 fetched again by the waiter; 1 by no one (no one still wants it)
    assert cache.pending == {} and 1 not in cache.posts
