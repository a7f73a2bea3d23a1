"""The load loop: concurrent clients reading feeds and writing as the writer users, and a record of each request."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

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
    """Concurrent clients sending feed reads (viewers from a pool) and writes by the writer users."""

    http: httpx.AsyncClient
    viewers: Sequence[int]
    writers: Sequence[int]
    write_fraction: float
    rng: random.Random
    samples: list[Sample] = field(default_factory=list)
    created: set[int] = field(default_factory=set)  # post ids the writers created
    seen: list[tuple[int, int]] = field(default_factory=list)  # (post id, author id) from feeds, to engage with
    stop: asyncio.Event = field(default_factory=asyncio.Event)

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
            self.seen.extend((p["post_id"], p["author_id"]) for p in data["posts"][:5])
            del self.seen[:-200]
        elif op == "post" and resp.status_code == 200:
            self.created.add(resp.json()["post_id"])
        error = resp.text[:200] if resp.status_code != 200 else ""
        self.samples.append(Sample(started, (time.monotonic() - started) * 1000, op, resp.status_code, degraded, error))
        return resp

    async def client(self) -> None:
        while not self.stop.is_set():
            if self.rng.random() >= self.write_fraction:
                await self.request("feed", "POST", "/v1/feed/for_you", {"viewer_id": self.rng.choice(self.viewers)})
                continue
            writer = self.rng.choice(self.writers)
            kind = self.rng.choice(("post", "engage", "follow"))
            if kind == "post":
                await self.request("post", "POST", "/v1/posts", {"author_id": writer, "text": f"chaos {self.rng.getrandbits(32)}"})
            elif kind == "engage" and self.seen:
                pid, author = self.rng.choice(self.seen)
                await self.request("engage", "POST", "/v1/engagements", {
                    "user_id": writer, "post_id": pid, "author_id": author, "action": "favorite", "timestamp_ms": clock.now_ms()})
            else:
                target = self.rng.choice([w for w in self.writers if w != writer])
                method = self.rng.choice(("PUT", "DELETE"))
                await self.request("follow", method, f"/v1/users/{writer}/follows/{target}")
