"""Small builders for Thunder tests (posts, events, requests) and a brute-force oracle."""

from __future__ import annotations

from xserve.config import ThunderConfig
from xserve.schema import InNetworkRequest, LightPost, Media, MediaKind, Post, PostCreated, PostDeleted

HOUR = 3_600_000
NOW = 1_000 * HOUR  # an arbitrary "now" far from 0


def post(
    pid: int,
    author: int,
    t: int = NOW - HOUR,
    *,
    reply_to: int | None = None,
    reply_user: int | None = None,
    repost_of: int | None = None,
    repost_user: int | None = None,
    conv: int | None = None,
    video_ms: int | None = None,
    media: tuple[Media, ...] = (),
) -> Post:
    if video_ms is not None:
        media = (Media(MediaKind.VIDEO, video_ms),)
    return Post(
        post_id=pid,
        author_id=author,
        created_at_ms=t,
        in_reply_to_post_id=reply_to,
        in_reply_to_user_id=reply_user,
        repost_of_post_id=repost_of,
        repost_of_user_id=repost_user,
        conversation_id=conv,
        media=media,
    )


def created(*posts: Post) -> list[PostCreated]:
    return [PostCreated(p) for p in posts]


def deleted(pid: int, t: int = NOW - 1) -> PostDeleted:
    return PostDeleted(post_id=pid, deleted_at_ms=t)


def request(followed, viewer: int = 999, max_results: int = 0, exclude=(), video_only: bool = False):
    return InNetworkRequest(
        viewer_id=viewer,
        followed_ids=tuple(followed),
        max_results=max_results,
        exclude_ids=frozenset(exclude),
        video_only=video_only,
    )


def ids(posts: list[LightPost]) -> list[int]:
    return [p.post_id for p in posts]


def oracle(live: dict[int, LightPost], video_ids: set[int], req: InNetworkRequest, now: int, cfg: ThunderConfig, parents=None):
    """The reference query written plainly over a table of live posts (no deques, no fast paths).

    ``parents``: where replies' parents are looked up, when not ``live`` alone (a store's posts plus the stubs
    of posts its replies refer to, e.g. one evicted by the list cap and named by a later reply's refs)."""
    parents = live if parents is None else parents
    cutoff = now - cfg.retention_ms
    followed = req.followed_ids[: cfg.max_input_list_size]
    fset = set(followed)
    exclude = req.exclude_ids
    if len(exclude) > cfg.max_input_list_size:
        exclude = frozenset(sorted(exclude)[: cfg.max_input_list_size])

    def is_reply(p):
        return p.in_reply_to_post_id is not None or p.in_reply_to_user_id is not None

    def reply_ok(p):
        parent = parents.get(p.in_reply_to_post_id)
        if parent is None or parent.created_at_ms < cutoff:
            return False
        if not is_reply(parent) and parent.repost_of_post_id is None:
            return True
        return (
            p.conversation_id is not None
            and parent.in_reply_to_post_id == p.conversation_id
            and p.in_reply_to_user_id in fset
        )

    def scan(kind, cap, rule):
        out = []
        for a in followed:
            mine = sorted(
                (p for p in live.values() if p.author_id == a and kind(p) and p.created_at_ms >= cutoff),
                key=lambda p: (p.created_at_ms, p.post_id),
                reverse=True,
            )
            mine = [p for p in mine if p.post_id not in exclude][: cfg.max_tiny_posts_per_user_scan]
            mine = [p for p in mine if not (p.repost_of_post_id is not None and p.repost_of_user_id == req.viewer_id)]
            if rule:
                mine = [p for p in mine if p.in_reply_to_post_id is None or reply_ok(p)]
            out += mine[:cap]
        return out

    if req.video_only:
        out = scan(lambda p: p.post_id in video_ids, cfg.max_video_posts_per_author, False)
        n = req.max_results if req.max_results > 0 else cfg.max_videos_to_return
    else:
        orig = scan(lambda p: not is_reply(p) and p.repost_of_post_id is None, cfg.max_original_posts_per_author, False)
        sec = scan(lambda p: is_reply(p) or p.repost_of_post_id is not None, cfg.max_reply_posts_per_author, True)
        out = orig + sec
        n = req.max_results if req.max_results > 0 else cfg.max_posts_to_return
    out.sort(key=lambda p: (p.created_at_ms, p.post_id), reverse=True)
    return out[:n]
