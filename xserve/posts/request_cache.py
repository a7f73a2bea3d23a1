"""``RequestPostCache``: the posts one request has looked up, so its many lookups cost one fetch per post.

The feed's hydrators each ask for posts (core data, video duration,
subscriptions, authors, visibility), mostly the same ones, and concurrently.
Through one cache per request, a post is fetched at most once: ids already
answered come from the cache, ids in flight are awaited (they share that
fetch), only the rest are fetched, in one call. A failed fetch fails every
lookup waiting on it, and its ids are fetched again by the next lookup. A fetch
abandoned because the lookup that started it was cancelled (its hydrator's
timeout) fails no one else: the lookups waiting on it fetch those ids
themselves. (It used to hand them its ``CancelledError``, which ended the whole
feed as if its client had gone: Serve's proxy answered a plain-text 500.)
Pure asyncio (one event loop); the request owns it and drops it at the end,
so it never serves a post older than the request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from xserve.schema import Post

__all__ = ["PostFetch", "RequestPostCache"]

PostFetch = Callable[[list[int]], Awaitable[dict[int, Post]]]  # ids -> the posts found (absent ids left out)


class RequestPostCache:
    """Posts fetched during one request, and the fetches in flight (keyed by post id)."""

    __slots__ = ("pending", "posts")

    def __init__(self) -> None:
        self.posts: dict[int, Post | None] = {}  # None = looked up, absent
        self.pending: dict[int, asyncio.Future[None]] = {}  # ids being fetched -> done when their fetch ends

    def __repr__(self) -> str:
        return f"RequestPostCache(posts={len(self.posts)}, pending={len(self.pending)})"

    async def get(self, post_ids: Iterable[int], fetch: PostFetch) -> dict[int, Post]:
        """The posts among ``post_ids`` that exist; fetches (with ``fetch``) only ids never looked up."""
        wanted = set(post_ids)
        new = [pid for pid in wanted if pid not in self.posts and pid not in self.pending]
        waits = {self.pending[pid] for pid in wanted if pid in self.pending}
        if new:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            for pid in new:
                self.pending[pid] = fut
            try:
                found = await fetch(new)
                for pid in new:
                    self.posts[pid] = found.get(pid)
                fut.set_result(None)
            except asyncio.CancelledError:
                fut.cancel()  # abandoned, not failed: the waiters fetch these ids themselves
                raise
            except BaseException as exc:
                fut.set_exception(exc)
                fut.exception()  # retrieved: waiters re-raise it, no "never retrieved" warning
                raise
            finally:
                for pid in new:
                    self.pending.pop(pid, None)
        if waits:
            await asyncio.wait(waits)  # cancelling this lookup stops the wait, never the others' fetches
            for wait in waits:
                if not wait.cancelled() and (exc := wait.exception()) is not None:
                    raise exc
            if any(pid not in self.posts for pid in wanted):  # a fetch it waited on was abandoned
                return await self.get(wanted, fetch)
        return {pid: post for pid in wanted if (post := self.posts.get(pid)) is not None}
