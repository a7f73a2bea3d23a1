"""PostingLists: the columns hold each author's list exactly as a deque would, through every kind of write."""

import random
from collections import deque

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.thunder.factories import HOUR, NOW, created, deleted, post
from xserve.config import ThunderConfig
from xserve.schema import LightPost
from xserve.thunder.postings import NO_USER, PostingLists
from xserve.thunder.store import ThunderStore, light_post


def lp(pid: int, author: int = 1, t: int = 0, **kw) -> LightPost:
    return light_post(post(pid, author, NOW - HOUR + (t or pid), **kw), 10_000)


def ids_of(pl: PostingLists, author: int) -> list[int]:
    return [p.post_id for p in pl.posts(author)]


def test_append_grows_segments_and_newest_gathers_newest_first():
    pl = PostingLists()
    for i in range(1, 40):  # past several capacity doublings
        pl.append(7, lp(i, 7))
    pl.append(8, lp(100, 8))
    assert ids_of(pl, 7) == list(range(1, 40))
    slots, first, taken, length, which = pl.newest([9, 8, 7], 5)
    assert which.tolist() == [1, 2] and taken.tolist() == [1, 5] and length.tolist() == [1, 39]
    pids = np.frombuffer(pl.pid, dtype=np.int64)[slots]
    assert pids.tolist() == [100, 39, 38, 37, 36, 35] and first.tolist() == [0, 1]


def test_columns_hold_what_the_query_reads():
    pl = PostingLists()
    pl.append(1, lp(1))
    pl.append(1, lp(2, repost_of=1, repost_user=5))
    pl.append(1, lp(3, reply_to=1, reply_user=1, conv=1))
    time, pid, repost_user, needs_parent = pl.columns()
    slots, *_ = pl.newest([1], 10)
    assert pid[slots].tolist() == [3, 2, 1]
    assert repost_user[slots].tolist() == [NO_USER, 5, NO_USER]
    assert needs_parent[slots].tolist() == [1, 0, 0]
    assert time[slots].tolist() == [NOW - HOUR + 3, NOW - HOUR + 2, NOW - HOUR + 1]


def test_pop_remove_insert_and_drop_keep_the_list_and_free_the_segment():
    pl = PostingLists()
    for i in range(1, 9):
        pl.append(1, lp(i))
    pl.pop_oldest(1, 3)
    assert ids_of(pl, 1) == [4, 5, 6, 7, 8]
    pl.remove(1, 2)  # 6
    pl.insert(1, 0, lp(50, t=3))
    assert ids_of(pl, 1) == [50, 4, 5, 7, 8]
    for i in range(9, 30):  # compaction or a move once the segment's end is reached
        pl.append(1, lp(i))
    assert ids_of(pl, 1) == [50, 4, 5, 7, 8, *range(9, 30)]
    pl.append(2, lp(99, 2))
    pl.pop_oldest(1, 26)
    assert ids_of(pl, 1) == [] and 1 not in pl.rows and ids_of(pl, 2) == [99]
    assert all(p is None or p.author_id == 2 for p in pl.obj)  # nothing of author 1 kept alive
    pl.remove(2, 0)
    assert len(pl) == 0 and len(pl.obj) == 0  # everything gone: memory given back


@settings(max_examples=30)
@given(ops=st.lists(st.tuples(st.sampled_from("aaaipr"), st.integers(1, 4), st.integers(0, 50)), max_size=120))
def test_random_operations_match_deques(ops):
    pl, ref = PostingLists(), {}
    pid = 0
    for op, author, x in ops:
        d = ref.setdefault(author, deque())
        pid += 1
        if op == "a" or (op in "ipr" and not d):
            d.append(lp(pid, author))
            pl.append(author, d[-1])
        elif op == "i":
            i = x % (len(d) + 1)
            d.insert(i, lp(pid, author))
            pl.insert(author, i, d[i])
        elif op == "p":
            n = 1 + x % len(d)
            for _ in range(n):
                d.popleft()
            pl.pop_oldest(author, n)
        else:
            i = x % len(d)
            del d[i]
            pl.remove(author, i)
        for a, dq in ref.items():
            assert pl.posts(a) == list(dq)
            slots, *_ = pl.newest([a], 3)
            assert np.frombuffer(pl.pid, dtype=np.int64)[slots].tolist() == [p.post_id for p in reversed(dq)][:3]


def test_store_columns_equal_its_deques_after_late_events_evictions_deletes_and_trims():
    cfg = ThunderConfig(max_posts_per_author_list=6)
    s = ThunderStore(cfg)
    rng = random.Random(1)
    events = []
    for pid in range(1, 400):
        t = NOW - HOUR + rng.randrange(0, 10_000)  # out of order: late inserts
        r = rng.random()
        if r < 0.3 and pid > 2:
            parent = rng.randrange(1, pid)
            events.append(post(pid, rng.randrange(1, 6), t, reply_to=parent, reply_user=1, conv=parent))
        elif r < 0.45 and pid > 2:
            events.append(post(pid, rng.randrange(1, 6), t, repost_of=rng.randrange(1, pid), repost_user=2))
        else:
            events.append(post(pid, rng.randrange(1, 6), t, video_ms=20_000 if r > 0.8 else None))
    for i in range(0, len(events), 37):
        s.apply(created(*events[i : i + 37]) + [deleted(rng.randrange(1, 400))], NOW)
    s.trim(NOW - HOUR + 5_000 + cfg.retention_ms)
    for name in ("_originals", "_secondary", "_videos"):
        by_author, cols = getattr(s, name), s._cols[name]
        assert set(cols.rows) == set(by_author)
        for a, d in by_author.items():
            assert cols.posts(a) == list(d), (name, a)


@settings(max_examples=20)
@given(ops=st.lists(st.tuples(st.booleans(), st.integers(1, 3_000), st.integers(0, 2)), min_size=1, max_size=600))
def test_author_index_finds_what_a_dict_holds_through_sets_clears_and_rehashes(ops):
    from xserve.thunder.postings import AuthorIndex

    index, ref = AuthorIndex(3), {}
    for add, author, kind in ops:
        if add:
            index.set(author, kind, author * 3 + kind)
            ref[(author, kind)] = author * 3 + kind
        else:
            index.clear(author, kind)
            ref.pop((author, kind), None)
    assert len(index) == len({a for a, _ in ref})
    asked = np.array(sorted({a for _, a, _ in ops} | {4_000, 4_001}), dtype=np.int64)  # many: vectorised probing
    found = index.find(asked)
    for kind in range(3):
        assert index.rows_of(kind, found).tolist() == [ref.get((a, kind), -1) for a in asked.tolist()]


def test_parent_table_follows_the_lookup_and_frees_unnamed_entries():
    from xserve.thunder.postings import ABSENT, ORIGINAL, ParentTable

    held = {1: lp(1), 2: lp(2, reply_to=1, reply_user=1, conv=1)}
    table = ParentTable(held.get)
    replies = PostingLists(table)
    replies.append(5, lp(10, 5, reply_to=1, reply_user=1, conv=1))
    replies.append(5, lp(11, 5, reply_to=2, reply_user=1, conv=1))
    replies.append(5, lp(12, 5, reply_to=3, reply_user=1, conv=1))  # parent not held (yet)
    h = [table.handles[p] for p in (1, 2, 3)]
    assert table.columns()[h].tolist() == [[NOW - HOUR + 1, ORIGINAL], [NOW - HOUR + 2, 1], [ABSENT, -2]]
    held[3] = lp(3)
    table.refresh(3)  # a late parent
    del held[1]
    table.refresh(1)  # a deleted one
    assert table.columns()[h, 0].tolist() == [ABSENT, NOW - HOUR + 2, NOW - HOUR + 3]
    parent, conv, reply_user = replies.reply_columns()
    slots, *_ = replies.newest([5], 10)
    assert parent[slots].tolist() == [h[2], h[1], h[0]] and conv[slots].tolist() == [1, 1, 1]
    del parent, conv, reply_user
    replies.pop_oldest(5, 2)  # the replies to 1 and 2 leave
    assert table.collect(replies.parents_in_use()) == 2 and set(table.handles) == {3}
    replies.append(5, lp(13, 5, reply_to=2, reply_user=1, conv=1))  # a freed handle is reused, current
    assert table.handles[2] in h[:2] and table.columns()[table.handles[2]].tolist() == [NOW - HOUR + 2, 1]
