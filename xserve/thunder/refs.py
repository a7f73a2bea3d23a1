"""What a post carries about the posts it refers to, so that a Thunder shard needs no copy of other shards' posts.

Thunder's reply rule reads a reply's parent (live, within retention, an
original, or a reply to the conversation root) and its video rule reads a
repost's source (a single video, not a reply). A shard owns only its authors'
posts, while a parent or a source can be by anyone; so the writer fills
``Post.reply_parent`` and ``Post.repost_source`` (:class:`~xserve.schema.PostRef`)
from the posts referred to as it knows them: the API's write path from the
post catalog, the first run from the seeded world. A shard then keeps a stub
of such a post only while its own posts refer to it (``docs/thunder.md``).

A post without refs (a log written before they existed, a producer that does
not fill them) is still applied: its parent or source is then looked up among
the shard's own posts only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import msgspec

from xserve.schema import Media, MediaKind, Post, PostRef

__all__ = ["carry_refs", "post_ref", "single_video_ms", "with_refs"]


def single_video_ms(media: Sequence[Media]) -> int | None:
    """The video's length when ``media`` is exactly one video (Thunder's video rule), else None."""
    if len(media) == 1 and media[0].kind is MediaKind.VIDEO:
        return media[0].duration_ms
    return None


def post_ref(post: Post) -> PostRef:
    """What Thunder's rules read of ``post`` when another post refers to it."""
    return PostRef(
        created_at_ms=post.created_at_ms,
        in_reply_to_post_id=post.in_reply_to_post_id,
        in_reply_to_user_id=post.in_reply_to_user_id,
        repost_of_post_id=post.repost_of_post_id,
        video_ms=single_video_ms(post.media),
    )


def with_refs(post: Post, known: Mapping[int, Post]) -> Post:
    """``post`` with the refs of its parent and reposted post filled from ``known`` (refs it has are kept)."""
    changes = {}
    if post.reply_parent is None and post.in_reply_to_post_id in known:
        changes["reply_parent"] = post_ref(known[post.in_reply_to_post_id])  # type: ignore[index]
    if post.repost_source is None and post.repost_of_post_id in known:
        changes["repost_source"] = post_ref(known[post.repost_of_post_id])  # type: ignore[index]
    return msgspec.structs.replace(post, **changes) if changes else post


def carry_refs(posts: Iterable[Post]) -> list[Post]:
    """Each of ``posts`` with the refs of the posts among them it refers to (a whole world's, or a window's)."""
    posts = list(posts)
    by_id = {p.post_id: p for p in posts}
    return [with_refs(p, by_id) for p in posts]
