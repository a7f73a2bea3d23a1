"""The load loop: concurrent clients reading feeds and writing as the writer users; a record of each request and
the ledger of acknowledged writes."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from scripts.chaoslib.writes import Ledger
from xserve import clock

__all__ = ["Load", "Sample"]


@dataclass(slots=True)
class Sample:
    started: float  # monotonic seconds
    ms: float
    op: str
    status: int  # HTTP status; 0 = transport error (refused, reset, timed out)
    degraded: tuple[str, ...] = ()
    error: str = ""  # the error body or the exception, for failed requests


@dataclass
class Load:
    """Concurrent clients sending feed reads (viewers from a pool) and writes by the writer users.

    Each writer user makes one write at a time (a lock per writer), so ``writes``, the ledger of what was
    acknowledged, knows which write to a follow came last. ``writes_paused`` holds every write back (feed
    reads go on) while a fault's state is read.
    """

    http: httpx.AsyncClient
    viewers: Sequence[int]
    writers: Sequence[int]
    write_fraction: float
    rng: random.Random
    writes: Ledger
    samples: list[Sample] = field(default_factory=list)
    seen: list[tuple[int, int]] = field(default_factory=list)  # (post id, author id) of world posts from feeds, to engage with
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    _own: dict[int, list[int]] = field(default_factory=dict)  # writer -> its acknowledged posts not yet deleted
    _locks: dict[int, asyncio.Lock] = field(default_factory=dict)  # writer -> held while one of its writes runs
    _paused: int = 0  # writes_paused depth

    @property
    def created(self) -> set[int]:
        """Post ids the writers created (acknowledged)."""
        return set(self.writes.posts)

    @contextlib.asynccontextmanager
    async def writes_paused(self) -> AsyncIterator[None]:
        """No write runs inside (those in flight are awaited first); feed reads go on."""
        self._paused += 1
        try:
            for w in self.writers:
                async with self._lock(w):
                    pass
            yield
        finally:
            self._paused -= 1

    def _lock(self, writer: int) -> asyncio.Lock:
        return self._locks.setdefault(writer, asyncio.Lock())

    async def request(self, op: str, method: str, path: str, body: Any = None) -> httpx.Response | None:
        started = time.monotonic()
        try:
            resp = await self.http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            self.samples.append(Sample(started, (time.monotonic() - started) * 1000, op, 0, (), type(exc).__name__))
            await asyncio.sleep(0.1)  # a server that is down refuses at once: don't spin
            return None
        degraded: tuple[str, ...] = ()
        if op == "feed" and resp.status_code == 200:
            data = resp.json()
            degraded = tuple(data.get("degraded", ()))
            # not the writers' posts: they may be deleted before the engagement is sent (a 404)
            self.seen.extend((p["post_id"], p["author_id"]) for p in data["posts"][:5] if p["author_id"] not in self.writers)
            del self.seen[:-200]
        error = resp.text[:200] if resp.status_code != 200 else ""
        self.samples.append(Sample(started, (time.monotonic() - started) * 1000, op, resp.status_code, degraded, error))
        return resp

    async def client(self) -> None:
        while not self.stop.is_set():
            if self._paused or self.rng.random() >= self.write_fraction:
                await self.request("feed", "POST", "/v1/feed/for_you", {"viewer_id": self.rng.choice(self.viewers)})
                continue
            writer = self.rng.choice(self.writers)
            async with self._lock(writer):
                if not self._paused:  # paused while this client waited for the lock
                    await self.write(writer, self.rng.choice(("post", "post", "delete", "engage", "follow")))

    async def write(self, writer: int, kind: str) -> None:
        """One write of ``kind`` by ``writer``, recorded in the ledger (with the writer's lock held)."""
        own = self._own.setdefault(writer, [])
        if kind == "delete" and own:
            post_id = own.pop(self.rng.randrange(len(own)))
            resp = await self.request("delete", "DELETE", f"/v1/posts/{post_id}")
            self.writes.post_deleted(post_id, resp.status_code if resp is not None else 0)
        elif kind == "engage" and self.seen:
            pid, author = self.rng.choice(self.seen)
            now = clock.now_ms()
            resp = await self.request("engage", "POST", "/v1/engagements", {
                "user_id": writer, "post_id": pid, "author_id": author, "action": "favorite", "timestamp_ms": now})
            self.writes.engaged(writer, pid, "favorite", now, resp.status_code if resp is not None else 0)
        elif kind == "follow":
            target = self.rng.choice([w for w in self.writers if w != writer])
            present = self.rng.random() < 0.5
            resp = await self.request("follow", "PUT" if present else "DELETE", f"/v1/users/{writer}/follows/{target}")
            self.writes.follow_set(writer, target, present, resp.status_code if resp is not None else 0)
        else:
            text = f"chaos {self.rng.getrandbits(32)}"
            resp = await self.request("post", "POST", "/v1/posts", {"author_id": writer, "text": text})
            if resp is not None and resp.status_code == 200:
                post_id = resp.json()["post_id"]
                self.writes.post_created(post_id, writer, text)
                own.append(post_id)
