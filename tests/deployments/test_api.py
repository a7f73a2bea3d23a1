"""FeedAPI's edge helpers, without Ray: body decoding and completing a new post from its parents."""

from __future__ import annotations

import pytest

from xserve.deployments.api import ApiError, _complete, check_id, decode
from xserve.schema import (
    Engagement,
    EngagementsBody,
    FeedRequest,
    NewPost,
    Post,
    PostCreated,
    PostDeleted,
    QuotedPostDeleted,
)


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b'{"viewer_id": 1, "limit": -3}', 422, "$.limit"),
        (b'{"viewer_id": 1, "colour": 1}', 422, "colour"),
        (b'{"viewer_id": 0}', 422, "$.viewer_id"),
        (b"{not json", 400, "JSON"),
        (b"[1, 2]", 422, "object"),
    ],
)
def test_decode_errors_name_the_field(body, status, needle):
    with pytest.raises(ApiError) as err:
        decode(FeedRequest, body)
    assert err.value.status == status and needle in err.value.reason and "\n" not in err.value.reason


def test_engagements_body_is_one_or_a_bounded_list():
    one = b'{"user_id": 1, "post_id": 2, "author_id": 3, "action": "favorite", "timestamp_ms": 5}'
    assert isinstance(decode(EngagementsBody, one), Engagement)
    assert len(decode(EngagementsBody, b"[" + b",".join([one] * 3) + b"]")) == 3
    with pytest.raises(ApiError):
        decode(EngagementsBody, b"[" + b",".join([one] * 1001) + b"]")


def test_check_id():
    assert check_id("user_id", 5) == 5
    for bad in (0, -1, 2**63):
        with pytest.raises(ApiError):
            check_id("user_id", bad)


def test_a_reply_and_a_repost_inherit_from_their_parents():
    root = Post(post_id=10, author_id=1, created_at_ms=0, text="root")
    reply = Post(post_id=11, author_id=2, created_at_ms=1, text="re", in_reply_to_post_id=10, conversation_id=10)
    new = NewPost(author_id=3, text="re re", in_reply_to_post_id=11)
    post = _complete(new, 99, 1_000, {11: reply})
    assert (post.post_id, post.created_at_ms, post.in_reply_to_user_id, post.conversation_id) == (99, 1_000, 2, 10)
    repost = _complete(NewPost(author_id=3, repost_of_post_id=10), 100, 5, {10: root})
    assert repost.repost_of_user_id == 1 and repost.conversation_id is None
    given = _complete(NewPost(author_id=3, text="x", created_at_ms=7), 101, 5, {})
    assert given.created_at_ms == 7


def test_a_reply_and_a_repost_carry_what_thunder_reads_of_the_posts_they_refer_to():
    from xserve.schema import Media, MediaKind, PostRef

    video = (Media(MediaKind.VIDEO, 30_000),)
    root = Post(post_id=10, author_id=1, created_at_ms=3, text="root", media=video)
    reply = Post(post_id=11, author_id=2, created_at_ms=4, text="re", in_reply_to_post_id=10, in_reply_to_user_id=1,
                 conversation_id=10)
    post = _complete(NewPost(author_id=3, text="re re", in_reply_to_post_id=11), 99, 1_000, {11: reply})
    assert post.reply_parent == PostRef(created_at_ms=4, in_reply_to_post_id=10, in_reply_to_user_id=1)
    assert post.repost_source is None
    repost = _complete(NewPost(author_id=3, repost_of_post_id=10), 100, 5, {10: root})
    assert repost.repost_source == PostRef(created_at_ms=3, video_ms=30_000) and repost.reply_parent is None


class CatalogPosts:
    """The part of the post catalog client that FeedAPI uses, over one real ``PostCatalog`` (no Ray)."""

    def __init__(self, posts: list[Post]) -> None:
        from xserve.posts import PostCatalog

        self.catalog = PostCatalog(None, cache_size=100, live_retention_ms=48 * 3_600_000)
        self.writes: list[list] = []
        for p in posts:
            self.catalog.apply(PostCreated(p))

    async def get_posts(self, post_ids):
        return self.catalog.get(post_ids)

    async def quotes_of(self, post_id):
        return self.catalog.quotes_of(post_id)

    async def write(self, events):
        self.writes.append(list(events))
        for event in events:
            self.catalog.apply(event)


def test_deleting_a_post_deletes_its_quotes_first():
    """QuotedPostDeleted is produced (issue 13): quotes first, so a delete retried after a failure finds them."""
    import asyncio

    from xserve.deployments.api import FeedAPI

    now = 1_800_000_000_000
    posts = CatalogPosts([
        Post(post_id=1, author_id=9, created_at_ms=now - 10, text="quoted"),
        Post(post_id=2, author_id=5, created_at_ms=now - 5, text="a quote", quote_of_post_id=1),
        Post(post_id=3, author_id=6, created_at_ms=now - 4, text="another", quote_of_post_id=1),
        Post(post_id=4, author_id=6, created_at_ms=now - 3, text="a reply", in_reply_to_post_id=1),
    ])
    feed_api = FeedAPI(users=None, posts=posts, sinks=[], pipeline=None, now_ms=lambda: now)
    assert asyncio.run(feed_api.delete_post(1)) == {"post_id": 1}
    assert posts.writes == [
        [QuotedPostDeleted(2, 1, now, quoting_author_id=5), QuotedPostDeleted(3, 1, now, quoting_author_id=6)],
        [PostDeleted(1, now, author_id=9)],
    ]
    assert set(posts.catalog.get([1, 2, 3, 4])) == {4}  # a reply is not a quote: it stays


def test_a_post_is_marked_with_an_outbound_link_from_its_text_unless_the_request_says():
    from xserve.deployments.api import has_outbound_link

    assert has_outbound_link("read https://example.com/a") and has_outbound_link("HTTP://x.y")
    assert not has_outbound_link("no link, just http:// and a bare example.com") and not has_outbound_link("")


class _UserShard:
    """A user-store shard actor's ``query_data`` (encoded, awaited like an ``ObjectRef``) over a real ``UserStore``."""

    def __init__(self, store) -> None:
        import msgspec

        self._store, self._enc = store, msgspec.msgpack.Encoder()
        shard = self

        class _Method:
            @staticmethod
            def remote(user_id, history_limit, trim_block=1):
                async def call():
                    return shard._enc.encode(shard._store.query_data(user_id, history_limit, 0, trim_block))
                return call()

        self.query_data = _Method()


def test_the_feed_ranks_the_context_window_so_an_engagement_only_appends_to_a_full_history():
    """Issue 16: the feed read its viewer through the API's client (the newest ``history_length`` entries), so on a
    full history every engagement slid the window by one and the Ranker re-encoded the whole context (a KV miss
    on 37 % of the medium world's repeat feeds). The feed's ``viewers`` client returns the context window: between
    trims, the next feed's history is the last one with the new entry appended."""
    import asyncio

    from xserve.config import MixerConfig, ServingConfig
    from xserve.deployments.api import FeedAPI
    from xserve.deployments.clients import UserStoreClient
    from xserve.schema import Action, EngagementRecorded, UserUpserted
    from xserve.users.store import UserStore

    mixer = MixerConfig(history_length=16, history_trim_block=8)
    store = UserStore(ServingConfig(), mixer)
    store.apply(UserUpserted(7, "viewer", 1))

    def engage(post_id: int) -> None:
        store.apply(EngagementRecorded(Engagement(7, post_id, 3, Action.FAVORITE, post_id * mixer.history_window_ms)))

    for post_id in range(1, 21):  # 20 entries: more than the window holds
        engage(post_id)
    shards = [_UserShard(store)]
    api_users = UserStoreClient(shards, mixer.history_length)  # the API's: the newest entries
    feed_users = UserStoreClient(shards, mixer.history_length, trim_block=mixer.history_trim_block)
    seen = []

    async def pipeline(req, request_id, now_ms, data):
        seen.append([it.post_id for it in data.history])
        from xserve.schema import FeedResponse
        return FeedResponse(request_id=request_id, posts=())

    api = FeedAPI(api_users, posts=None, sinks=[], pipeline=pipeline, now_ms=lambda: 1, viewers=feed_users)
    asyncio.run(api.feed(b'{"viewer_id": 7}'))
    engage(21)
    asyncio.run(api.feed(b'{"viewer_id": 7}'))
    assert seen[0] == list(range(9, 21))  # 20 entries: the oldest block of 8 trimmed, 12 left
    assert seen[1] == seen[0] + [21]  # the same prefix: the Ranker reuses its cached blocks


def test_a_feed_limit_above_serving_max_feed_limit_is_a_422_naming_the_setting():
    import asyncio

    from xserve.config import MixerConfig, ServingConfig
    from xserve.deployments.api import FeedAPI
    from xserve.deployments.clients import UserStoreClient
    from xserve.schema import UserUpserted
    from xserve.users.store import UserStore

    async def pipeline(req, request_id, now_ms, data):
        from xserve.schema import FeedResponse
        return FeedResponse(request_id=request_id, posts=())

    store = UserStore(ServingConfig(), MixerConfig())
    store.apply(UserUpserted(7, "viewer", 1))
    users = UserStoreClient([_UserShard(store)], MixerConfig().history_length)
    api = FeedAPI(users, posts=None, sinks=[], pipeline=pipeline, now_ms=lambda: 1, max_feed_limit=200)
    asyncio.run(api.feed(b'{"viewer_id": 7, "limit": 200}'))
    with pytest.raises(ApiError) as err:
        asyncio.run(api.feed(b'{"viewer_id": 7, "limit": 201}'))
    assert err.value.status == 422 and "serving.max_feed_limit = 200" in str(err.value)
    wide = FeedAPI(users, posts=None, sinks=[], pipeline=pipeline, now_ms=lambda: 1, max_feed_limit=5000)
    asyncio.run(wide.feed(b'{"viewer_id": 7, "limit": 5000}'))  # an evaluation app reads every candidate
