"""The load of the cluster check, and its ledger of every write the API acknowledged.

``Load`` runs concurrent clients through the HTTP proxy: feed reads for a
pool of viewers the ingress has served before, and writes by writer users
the check creates (posts, follows of world users, engagements with posts
seen in feeds). Every request becomes a ``Sample``; every write answered
200 goes into the ``WriteLedger``, which afterwards says which of them a
read through the API no longer shows (a lost write).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from xserve import clock

__all__ = ["Load", "Sample", "WriteLedger", "answered_ms"]


@dataclass(slots=True)
class Sample:
    started: float  # monotonic seconds
    ms: float
    op: str  # feed | post | follow | engage
    status: int  # HTTP status; 0 = no answer (refused, reset, timed out at the client)
    degraded: tuple[str, ...] = ()  # the feed's degraded components
    error: str = ""  # the start of the body of an answer other than 200


def answered_ms(samples: Sequence[Sample]) -> list[float]:
    """The latencies of the answered samples (a request with no answer has none)."""
    return [s.ms for s in samples if s.status]


@dataclass
class WriteLedger:
    """The writes the API acknowledged, per kind; ``missing`` reads each back."""

    history_length: int  # mixer.history_length: a user's newest engagements GET /v1/users shows
    posts: list[int] = field(default_factory=list)  # post ids created
    follows: dict[int, list[int]] = field(default_factory=dict)  # writer -> world users it followed
    engaged: dict[int, list[int]] = field(default_factory=dict)  # writer -> post ids it engaged with, in order

    @property
    def size(self) -> int:
        return len(self.posts) + sum(map(len, self.follows.values())) + sum(map(len, self.engaged.values()))

    def missing_from(self, posts_found: set[int], users: dict[int, dict[str, Any]]) -> list[str]:
        """The acknowledged writes a read does not show: ``posts_found`` are the created posts
        ``GET /v1/posts/{id}`` answered, ``users`` the writers' ``GET /v1/users/{id}`` records."""
        out = [f"post {p}" for p in self.posts if p not in posts_found]
        for writer, targets in self.follows.items():
            followed = set(users.get(writer, {}).get("features", {}).get("followed_user_ids", ()))
            out += [f"follow {writer}->{t}" for t in targets if t not in followed]
        for writer, post_ids in self.engaged.items():
            seen = {item[0] for item in users.get(writer, {}).get("history", ())}  # HistoryItem is array-like
            out += [f"engagement {writer}->{p}" for p in post_ids[-self.history_length:] if p not in seen]
        return out

    async def missing(self, http: httpx.AsyncClient) -> list[str]:
        """``missing_from`` over reads through the API (a failed read counts its writes as missing)."""
        found: set[int] = set()
        for post_id in self.posts:
            if (await http.get(f"/v1/posts/{post_id}")).status_code == 200:
                found.add(post_id)
        users = {}
        for writer in {*self.follows, *self.engaged}:
            resp = await http.get(f"/v1/users/{writer}")
            if resp.status_code == 200:
                users[writer] = resp.json()
        return self.missing_from(found, users)


@dataclass
class Load:
    """Clients reading feeds of ``viewers`` and writing as ``writers``; ``write_fraction`` of requests write."""

    http: httpx.AsyncClient
    viewers: Sequence[int]
    writers: Sequence[int]
    world_users: int  # follow targets are world users 1..N
    write_fraction: float
    ledger: WriteLedger
    rng: random.Random
    samples: list[Sample] = field(default_factory=list)
    seen: list[tuple[int, int]] = field(default_factory=list)  # (post id, author id) from feeds, to engage with
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    honor_retry_after: bool = False  # a client refused with 503 waits its Retry-After, as a polite client does

    async def request(self, op: str, method: str, path: str, body: Any = None) -> httpx.Response | None:
        started = time.monotonic()
        try:
            resp = await self.http.request(method, path, json=body)
        except httpx.HTTPError:
            self.samples.append(Sample(started, (time.monotonic() - started) * 1000, op, 0))
            return None
        degraded = ()
        if op == "feed" and resp.status_code == 200:
            data = resp.json()
            degraded = tuple(data["degraded"])
            self.seen = (self.seen + [(p["post_id"], p["author_id"]) for p in data["posts"][:3]])[-200:]
        error = resp.text[:300] if resp.status_code != 200 else ""
        self.samples.append(Sample(started, (time.monotonic() - started) * 1000, op, resp.status_code, degraded, error))
        if self.honor_retry_after and resp.status_code == 503:
            await asyncio.sleep(float(resp.headers.get("retry-after", "1")))
        return resp if resp.status_code == 200 else None

    async def client(self, writer: int) -> None:
        """One client; its writes are ``writer``'s, so each writer's writes are sent in order."""
        engaged: set[int] = set()
        while not self.stop.is_set():
            if self.rng.random() >= self.write_fraction:
                await self.request("feed", "POST", "/v1/feed/for_you", {"viewer_id": self.rng.choice(self.viewers)})
                continue
            kind = self.rng.choice(("post", "follow", "engage"))
            if kind == "post":
                resp = await self.request("post", "POST", "/v1/posts", {"author_id": writer, "text": "cluster check"})
                if resp is not None:
                    self.ledger.posts.append(resp.json()["post_id"])
            elif kind == "follow":
                target = self.rng.randint(1, self.world_users)
                if await self.request("follow", "PUT", f"/v1/users/{writer}/follows/{target}") is not None:
                    self.ledger.follows.setdefault(writer, []).append(target)
            elif fresh := [(p, a) for p, a in self.seen if p not in engaged]:
                post_id, author = self.rng.choice(fresh)
                body = {"user_id": writer, "post_id": post_id, "author_id": author, "action": "favorite",
                        "timestamp_ms": clock.now_ms()}
                if await self.request("engage", "POST", "/v1/engagements", body) is not None:
                    engaged.add(post_id)
                    self.ledger.engaged.setdefault(writer, []).append(post_id)

    async def run(self) -> None:
        """One client per writer until ``stop`` is set."""
        await asyncio.gather(*(self.client(w) for w in self.writers))
