"""scripts/chaoslib/writes.py and the load's ledger: every acknowledged write is recorded and read back, and a
missing one is reported."""

from __future__ import annotations

import asyncio
import json
import random

import httpx

from scripts.chaoslib.load import Load
from scripts.chaoslib.writes import Ledger, read_back
from xserve.schema import Action, HistoryItem, Post, UserFeatures, UserRecord

WRITER, OTHER = 7, 8


def post(pid: int, author: int = WRITER, text: str = "hi") -> Post:
    return Post(post_id=pid, author_id=author, created_at_ms=1_000, text=text)


def user(uid: int = WRITER, follows: tuple[int, ...] = (), liked: tuple[int, ...] = ()) -> UserRecord:
    history = tuple(HistoryItem(p, 99, frozenset({Action.FAVORITE}), 1_000 + i) for i, p in enumerate(liked))
    return UserRecord(uid, f"u{uid}", 0, UserFeatures(followed_user_ids=frozenset(follows)), history)


def ledger() -> Ledger:
    w = Ledger(history_length=2)
    w.post_created(1, WRITER, "hi")
    w.post_created(2, WRITER, "hi")
    w.post_deleted(2, 200)
    w.follow_set(WRITER, OTHER, True, 200)
    w.engaged(WRITER, 50, "favorite", 10, 200)
    return w


def test_what_was_acknowledged_reads_back_and_nothing_is_lost():
    w = ledger()
    assert w.acknowledged == 5 and w.post_ids() == [1, 2]  # two creates and a delete, read back as two posts and w.user_ids() == [WRITER]
    assert w.check({1: post(1), 2: None}, {WRITER: user(follows=(OTHER,), liked=(50,))}) == (4, [])


def test_each_kind_of_lost_write_is_named():
    w = ledger()
    checked, lost = w.check({1: None, 2: post(2)}, {WRITER: user()})
    assert checked == 4
    assert lost == [
        "post 1: its create was acknowledged, but GET finds no such post",
        "post 2: its delete was acknowledged, but GET still finds it",
        f"user {WRITER}: not following {OTHER}, though the last acknowledged write followed",
        f"user {WRITER}: no favorite of post 50 (at 10) in its history, though acknowledged",
    ]
    assert "author/text" in w.check({1: post(1, text="other"), 2: None}, {WRITER: user(follows=(OTHER,), liked=(50,))})[1][0]


def test_the_last_acknowledged_follow_write_is_in_force():
    w = Ledger(history_length=8)
    w.follow_set(WRITER, OTHER, True, 200)
    w.follow_set(WRITER, OTHER, False, 200)
    w.follow_set(WRITER, OTHER, True, 409)  # refused: changes nothing
    assert w.check({}, {WRITER: user()}) == (1, [])
    assert w.check({}, {WRITER: user(follows=(OTHER,))})[1] == [
        f"user {WRITER}: following {OTHER}, though the last acknowledged write unfollowed"]


def test_what_an_unanswered_write_touched_is_not_checked():
    w = ledger()
    w.post_deleted(1, 0)  # no answer: the post may or may not be gone
    w.follow_set(WRITER, OTHER, False, 503)  # a 5xx may have been applied too
    w.follow_set(WRITER, OTHER, True, 200)  # ...and may still land after this one
    w.engaged(WRITER, 51, "favorite", 11, 0)
    assert w.check({2: None}, {WRITER: user(liked=(50,))}) == (2, [])


def test_an_engagement_later_ones_may_have_pushed_out_of_the_history_is_not_checked():
    w = Ledger(history_length=2)
    for i, pid in enumerate((50, 51, 52)):
        w.engaged(WRITER, pid, "favorite", 10 + i, 200)
    checked, lost = w.check({}, {WRITER: user(liked=(52,))})  # the API shows the newest 2: 51 and 52
    assert checked == 2 and lost == [f"user {WRITER}: no favorite of post 51 (at 11) in its history, though acknowledged"]


def test_a_read_that_never_succeeds_counts_as_lost():
    w = ledger()
    assert w.check({}, {}) == (0, [])  # nothing read, nothing checked here: read_back counts the failed reads

    def app(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, text="busy")

    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(app), base_url="http://app") as http:
            return await read_back(http, w, tries=2)

    back = asyncio.run(go())
    assert back.checked == 3 and len(back.lost) == 3  # posts 1 and 2, user 7
    assert back.lost[0] == "GET /v1/posts/1 answered 503 2 times: busy"


class FakeWrites:
    """Answers the load's writes like the API: 200, a 404 for an unknown post, or no answer at all."""

    def __init__(self) -> None:
        self.posts: set[int] = set()
        self.next_id = 100
        self.drop: set[str] = set()  # "METHOD path" prefixes to leave unanswered

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if any(f"{request.method} {request.url.path}".startswith(d) for d in self.drop):
            raise httpx.ReadTimeout("no answer", request=request)
        path = request.url.path
        if request.method == "POST" and path == "/v1/posts":
            self.next_id += 1
            self.posts.add(self.next_id)
            return httpx.Response(200, json={"post_id": self.next_id})
        if request.method == "DELETE" and path.startswith("/v1/posts/"):
            pid = int(path.rsplit("/", 1)[1])
            if pid not in self.posts:
                return httpx.Response(404, json={"error": f"unknown post {pid}"})
            self.posts.discard(pid)
            return httpx.Response(200, json={"post_id": pid})
        if request.method == "POST" and path == "/v1/engagements":
            return httpx.Response(200, json={"accepted": 1})
        if "/follows/" in path:
            return httpx.Response(200, json={})
        if path == "/v1/feed/for_you":
            return httpx.Response(200, json={"posts": [{"post_id": 5, "author_id": 9}], "degraded": []})
        return httpx.Response(404, json={"error": "no route"})


def run_load(fake: FakeWrites, steps: list[tuple[int, str]]) -> Load:
    async def go() -> Load:
        async with httpx.AsyncClient(transport=httpx.MockTransport(fake), base_url="http://app") as http:
            load = Load(http, [1], [WRITER, OTHER], 1.0, random.Random(0), Ledger(history_length=8))
            await load.request("feed", "POST", "/v1/feed/for_you", {"viewer_id": 1})
            for writer, kind in steps:
                await load.write(writer, kind)
            return load

    return asyncio.run(go())


def test_the_load_records_each_acknowledged_write_in_the_ledger():
    fake = FakeWrites()
    load = run_load(fake, [(WRITER, "post"), (WRITER, "post"), (WRITER, "delete"), (WRITER, "engage"),
                           (WRITER, "follow"), (OTHER, "follow")])
    w = load.writes
    assert set(w.posts) == {101, 102} and load.created == {101, 102}
    assert len(w.deleted) == 1 and w.deleted < set(w.posts) and fake.posts == set(w.posts) - w.deleted
    assert [e[:3] for e in w.engagements] == [(WRITER, 5, "favorite")]
    assert set(w.follows) == {(WRITER, OTHER), (OTHER, WRITER)}
    assert w.acknowledged == 6
    assert [s.op for s in load.samples] == ["feed", "post", "post", "delete", "engage", "follow", "follow"]


def test_the_load_marks_what_an_unanswered_write_touched():
    fake = FakeWrites()
    fake.drop = {"DELETE /v1/posts/", "PUT /v1/users/", "DELETE /v1/users/", "POST /v1/engagements"}
    load = run_load(fake, [(WRITER, "post"), (WRITER, "delete"), (WRITER, "follow"), (WRITER, "engage")])
    w = load.writes
    assert w.unsure_posts == {101} and not w.deleted
    assert w.unsure_follows == {(WRITER, OTHER)} and not w.follows
    assert not w.engagements and w.sent_engagement_ms[WRITER]  # sent, so it counts towards the history bound
    assert [s.status for s in load.samples[1:]] == [200, 0, 0, 0]


def test_the_writers_posts_are_never_engaged_with():
    fake = FakeWrites()

    def feed_of_writer_posts(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/feed/for_you":
            return httpx.Response(200, content=json.dumps({"posts": [{"post_id": 101, "author_id": WRITER}],
                                                           "degraded": []}))
        return fake(request)

    async def go() -> Load:
        async with httpx.AsyncClient(transport=httpx.MockTransport(feed_of_writer_posts), base_url="http://app") as http:
            load = Load(http, [1], [WRITER, OTHER], 1.0, random.Random(0), Ledger(history_length=8))
            await load.request("feed", "POST", "/v1/feed/for_you", {"viewer_id": 1})
            return load

    assert asyncio.run(go()).seen == []  # a writer may delete it before the engagement arrives (a 404)


def test_no_write_runs_while_writes_are_paused():
    fake = FakeWrites()
    started: list[str] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.001)  # as a server would, so the client yields
        return fake(request)

    async def go() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer), base_url="http://app") as http:
            load = Load(http, [1], [WRITER, OTHER], 1.0, random.Random(0), Ledger(history_length=8))
            async with load.writes_paused():
                client = asyncio.create_task(load.client())
                while len(load.samples) < 10:
                    await asyncio.sleep(0.001)
                started.extend(s.op for s in load.samples)
            while not load.writes.acknowledged:  # resumed: the writes come
                await asyncio.sleep(0.001)
            load.stop.set()
            await client

    asyncio.run(go())
    assert started and set(started) == {"feed"}  # write_fraction 1.0, yet only feed reads while paused
