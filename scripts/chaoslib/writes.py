"""Every write the load sent, what each acknowledged one promises, and reading those promises back over HTTP.

A write answered 200 was acknowledged: it must be readable after any fault
(``docs/reliability.md``, "Durability"). A write refused with a 4xx changed
nothing. A write without an answer (a transport error, a client timeout) or with
a 5xx may or may not have been applied, so what it touched is left out of the
read-back from then on. ``Ledger`` is pure bookkeeping; ``read_back`` makes the
reads (``GET /v1/posts/{id}`` for posts and deletes, ``GET /v1/users/{id}`` for
follows and engagement history) and asks the ledger what is missing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx
import msgspec

from xserve.schema import Post, UserRecord

__all__ = ["Ledger", "ReadBack", "read_back"]

_UNREADABLE = object()  # a read that failed every try


def _answered(status: int) -> bool | None:
    """True: acknowledged (applied); False: refused (4xx, not applied); None: unknown (no answer, or a 5xx)."""
    if status == 200:
        return True
    return False if 400 <= status < 500 else None


@dataclass
class Ledger:
    """The load's writes and the state acknowledged ones promise.

    The load sends one write at a time per writer user, so the last acknowledged write of a (user, target)
    follow is the one in force, unless a write to it went unanswered.
    """

    history_length: int  # engagement-sequence entries GET /v1/users/{id} shows (the newest; mixer.history_length)
    posts: dict[int, tuple[int, str]] = field(default_factory=dict)  # acknowledged creates: post id -> (author, text)
    deleted: set[int] = field(default_factory=set)  # posts whose delete was acknowledged
    unsure_posts: set[int] = field(default_factory=set)  # a delete went unanswered: either outcome may be read
    follows: dict[tuple[int, int], bool] = field(default_factory=dict)  # (user, target) -> followed, per the last ack
    unsure_follows: set[tuple[int, int]] = field(default_factory=set)  # a follow write to it went unanswered
    engagements: list[tuple[int, int, str, int]] = field(default_factory=list)  # acknowledged (user, post, action, ms)
    sent_engagement_ms: dict[int, list[int]] = field(default_factory=dict)  # user -> timestamp of every one sent

    # ------------------------------------------------------------------ recording (status: the HTTP answer, 0 = none)

    def post_created(self, post_id: int, author_id: int, text: str) -> None:
        """An acknowledged create (an unanswered one has no id to read back)."""
        self.posts[post_id] = (author_id, text)

    def post_deleted(self, post_id: int, status: int) -> None:
        answered = _answered(status)
        if answered:
            self.deleted.add(post_id)
        elif answered is None:
            self.unsure_posts.add(post_id)

    def follow_set(self, user_id: int, target_id: int, present: bool, status: int) -> None:
        answered = _answered(status)
        if answered:
            self.follows[(user_id, target_id)] = present
        elif answered is None:
            self.unsure_follows.add((user_id, target_id))

    def engaged(self, user_id: int, post_id: int, action: str, timestamp_ms: int, status: int) -> None:
        self.sent_engagement_ms.setdefault(user_id, []).append(timestamp_ms)
        if _answered(status):
            self.engagements.append((user_id, post_id, action, timestamp_ms))

    @property
    def acknowledged(self) -> int:
        """How many writes were acknowledged so far."""
        return len(self.posts) + len(self.deleted) + len(self.follows) + len(self.engagements)

    # ------------------------------------------------------------------ what to read, and what is missing

    def post_ids(self) -> list[int]:
        """The posts whose state is known: created and still there, or deleted."""
        return sorted((set(self.posts) | self.deleted) - self.unsure_posts)

    def user_ids(self) -> list[int]:
        return sorted({u for u, _ in self.follows} | {u for u, *_ in self.engagements})

    def check(self, posts: Mapping[int, Post | None], users: Mapping[int, UserRecord | None]) -> tuple[int, list[str]]:
        """(how many acknowledged writes were checked, one line per lost one) given what the reads found:
        ``posts`` (None: 404) for ``post_ids()``, ``users`` (None: 404) for ``user_ids()``; an id missing
        from them could not be read, and its writes are not checked here.

        Left out: what an unanswered write touched, and an engagement that at least ``history_length``
        later ones sent by the same user may have pushed out of the history the API shows.
        """
        checked, lost = 0, []
        for pid in self.post_ids():
            if pid not in posts:
                continue
            checked += 1
            got = posts.get(pid)
            if pid in self.deleted:
                if got is not None:
                    lost.append(f"post {pid}: its delete was acknowledged, but GET still finds it")
            elif got is None:
                lost.append(f"post {pid}: its create was acknowledged, but GET finds no such post")
            elif (got.author_id, got.text) != self.posts[pid]:
                lost.append(f"post {pid}: author/text {(got.author_id, got.text)!r}, not {self.posts[pid]!r}")
        for (user, target), present in sorted(self.follows.items()):
            if (user, target) in self.unsure_follows or user not in users:
                continue
            checked += 1
            record = users.get(user)
            if record is None:
                lost.append(f"user {user}: unknown, but its follow of {target} was acknowledged")
            elif (target in record.features.followed_user_ids) != present:
                lost.append(f"user {user}: {'not ' if present else ''}following {target}, though the last "
                            f"acknowledged write {'followed' if present else 'unfollowed'}")
        for user, post, action, ms in self.engagements:
            later = sum(1 for t in self.sent_engagement_ms[user] if t >= ms) - 1
            if later >= self.history_length or user not in users:
                continue
            checked += 1
            record = users.get(user)
            actions = set() if record is None else {a for h in record.history if h.post_id == post for a in h.actions}
            if action not in actions:
                lost.append(f"user {user}: no {action} of post {post} (at {ms}) in its history, though acknowledged")
        return checked, lost


@dataclass
class ReadBack:
    """The outcome of one read-back."""

    checked: int  # acknowledged writes read back
    lost: list[str]  # one line per acknowledged write that is missing (or that could not be read)


async def read_back(http: httpx.AsyncClient, ledger: Ledger, concurrency: int = 4, tries: int = 3) -> ReadBack:
    """Read every acknowledged write of ``ledger`` over HTTP (the caller keeps writes from changing it meanwhile)."""
    gate = asyncio.Semaphore(concurrency)
    unreadable: list[str] = []

    async def get(path: str, type_: type) -> object | None:
        """The decoded answer, None on a 404, ``_UNREADABLE`` when every try failed otherwise."""
        status, error = 0, ""
        for _ in range(tries):
            async with gate:
                try:
                    resp = await http.get(path)
                except httpx.HTTPError as exc:
                    status, error = 0, type(exc).__name__
                    continue
            if resp.status_code == 200:
                return msgspec.json.decode(resp.content, type=type_)
            if resp.status_code == 404:
                return None
            status, error = resp.status_code, resp.text[:200]
        unreadable.append(f"GET {path} answered {status} {tries} times: {error}")
        return _UNREADABLE

    post_ids, user_ids = ledger.post_ids(), ledger.user_ids()
    posts = await asyncio.gather(*(get(f"/v1/posts/{p}", Post) for p in post_ids))
    users = await asyncio.gather(*(get(f"/v1/users/{u}", UserRecord) for u in user_ids))
    checked, lost = ledger.check({p: x for p, x in zip(post_ids, posts) if x is not _UNREADABLE},  # type: ignore[misc]
                                 {u: x for u, x in zip(user_ids, users) if x is not _UNREADABLE})
    return ReadBack(checked + len(unreadable), unreadable + lost)  # an unreadable write counts as lost
