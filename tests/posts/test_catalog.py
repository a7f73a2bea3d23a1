from __future__ import annotations

from xserve.posts.catalog import PostCatalog
from xserve.schema import Media, MediaKind, Post, PostCreated, PostDeleted, PostLabelsSet, QuotedPostDeleted, VisibilityLabel

HOUR = 3_600_000


def post(pid: int, author: int = 9, t: int = 0, **kw) -> Post:
    return Post(post_id=pid, author_id=author, created_at_ms=t, text=f"post {pid}", **kw)


class Table:
    """The posts table as a lookup function, counting calls (the real one is ``storage.post_lookup``)."""

    def __init__(self, posts: list[Post]) -> None:
        self.rows = {p.post_id: p for p in posts}
        self.calls: list[list[int]] = []

    def __call__(self, ids):
        self.calls.append(list(ids))
        return [self.rows[i] for i in ids if i in self.rows]


def test_reads_through_to_the_table_once_per_get_and_caches():
    table = Table([post(i) for i in range(1, 6)])
    cat = PostCatalog(table, cache_size=10, live_retention_ms=HOUR)
    assert set(cat.get([1, 2, 99])) == {1, 2}
    assert table.calls == [[1, 2, 99]]
    assert set(cat.get([1, 2, 3])) == {1, 2, 3}
    assert table.calls[-1] == [3]


def test_lru_evicts_least_recently_used():
    table = Table([post(i) for i in range(1, 6)])
    cat = PostCatalog(table, cache_size=2, live_retention_ms=HOUR)
    cat.get([1, 2])
    cat.get([1])  # 1 is now most recent
    cat.get([3])  # evicts 2
    table.calls.clear()
    cat.get([1, 2])
    assert table.calls == [[2]]


def test_live_posts_labels_and_deletes():
    video = post(7, media=(Media(MediaKind.VIDEO, duration_ms=12_000),), subscription_only=True)
    cat = PostCatalog(None, cache_size=10, live_retention_ms=HOUR)
    assert cat.apply(PostCreated(video)) and not cat.apply(PostCreated(video))
    got = cat.get([7])[7]
    assert got.video_duration_ms() == 12_000 and got.subscription_only
    assert cat.apply(PostLabelsSet(7, (VisibilityLabel.SPAM, VisibilityLabel.GORE)))
    assert not cat.apply(PostLabelsSet(7, (VisibilityLabel.GORE, VisibilityLabel.SPAM)))
    assert set(cat.get([7])[7].labels) == {VisibilityLabel.SPAM, VisibilityLabel.GORE}
    cat.apply(PostLabelsSet(7, ()))
    assert cat.get([7])[7].labels == ()
    assert cat.apply(PostDeleted(7, deleted_at_ms=5)) and not cat.apply(PostDeleted(7, deleted_at_ms=5))
    assert cat.get([7]) == {} and cat.exists([7]) == []
    cat.apply(PostCreated(post(8)))
    cat.apply(QuotedPostDeleted(quoting_post_id=8, quoted_post_id=7, deleted_at_ms=6))
    assert cat.get([8]) == {}


def test_table_labels_are_replaced_by_label_writes():
    table = Table([post(1, labels=(VisibilityLabel.NSFW,))])
    cat = PostCatalog(table, cache_size=10, live_retention_ms=HOUR)
    assert cat.get([1])[1].labels == (VisibilityLabel.NSFW,)
    cat.apply(PostLabelsSet(1, ()))
    assert cat.get([1])[1].labels == ()


def test_trim_drops_old_live_posts_only():
    cat = PostCatalog(None, cache_size=10, live_retention_ms=HOUR)
    cat.apply(PostCreated(post(1, t=0)))
    cat.apply(PostCreated(post(2, t=2 * HOUR)))
    assert cat.trim(now_ms=2 * HOUR) == 1
    assert set(cat.get([1, 2])) == {2}


def test_preload_respects_capacity():
    cat = PostCatalog(None, cache_size=3, live_retention_ms=HOUR)
    assert cat.preload(post(i) for i in range(1, 10)) == 3
    assert set(cat.get(range(1, 10))) == {1, 2, 3}


def test_quotes_of_a_post_from_writes_and_preload_rebuilt_on_replay_and_trimmed():
    """The quoted id -> quoting ids index, which deleting a post needs to delete its quotes (issue 13)."""
    writes = [
        PostCreated(post(1, t=HOUR)),
        PostCreated(post(2, author=5, t=HOUR, quote_of_post_id=1)),
        PostCreated(post(3, author=6, t=2 * HOUR, quote_of_post_id=1)),
        PostCreated(post(4, author=7, t=HOUR, quote_of_post_id=9)),
        QuotedPostDeleted(quoting_post_id=4, quoted_post_id=9, deleted_at_ms=HOUR),
    ]
    table = [post(10, author=8, t=HOUR, quote_of_post_id=1), post(11, author=8, t=HOUR, quote_of_post_id=9)]
    cat = PostCatalog(None, cache_size=1, live_retention_ms=2 * HOUR)
    assert cat.preload(table) == 1  # the cache holds one; the index holds every recent quote
    for event in writes:
        cat.apply(event)
    assert cat.quotes_of(1) == [(2, 5), (3, 6), (10, 8)] and cat.quotes_of(9) == [(11, 8)]  # 4 is deleted
    assert cat.quotes_of(2) == []

    replayed = PostCatalog(None, cache_size=1, live_retention_ms=2 * HOUR)  # a restart: preload, then the log
    replayed.preload(table)
    for event in writes:
        replayed.apply(event)
    assert replayed.quotes_of(1) == cat.quotes_of(1)

    cat.trim(now_ms=3 * HOUR + 1)  # past retention a quote is no candidate, so the index lets it go
    assert cat.quotes_of(1) == [(3, 6)] and cat.quotes_of(9) == []
