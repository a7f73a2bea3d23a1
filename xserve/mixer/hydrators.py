"""Pre-scoring candidate hydrators (reference ``home-mixer/candidate_hydrators/``).

They run concurrently over the same candidates, so none may rely on another's
fields. Each post-data hydrator makes one batched lookup through the request's
post cache (``query.post_cache``), so their lookups share one fetch per post.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from xserve.mixer.protocols import PostDataClient
from xserve.mixer.query import ForYouQuery
from xserve.pipeline import Hydrator
from xserve.schema import Post, PostCandidate, UserProfile

__all__ = [
    "AuthorInfoHydrator",
    "CoreDataHydrator",
    "InNetworkHydrator",
    "SubscriptionHydrator",
    "VideoDurationHydrator",
]


class InNetworkHydrator(Hydrator[ForYouQuery, PostCandidate, bool]):
    """``in_network`` = the author is the viewer or followed (by follow list, not by source)."""

    async def hydrate(self, query: ForYouQuery, candidates: Sequence[PostCandidate]) -> list[bool]:
        followed = query.features.followed_user_ids
        return [c.author_id == query.viewer_id or c.author_id in followed for c in candidates]

    def update(self, candidate: PostCandidate, value: bool) -> None:
        candidate.in_network = value


class _PostLookup(Hydrator[ForYouQuery, PostCandidate, Post | None]):
    """Fetches each candidate's ``Post`` in one call; subclasses copy their fields from it."""

    def __init__(self, post_data: PostDataClient) -> None:
        self._post_data = post_data

    async def hydrate(self, query: ForYouQuery, candidates: Sequence[PostCandidate]) -> list[Post | None]:
        posts = await query.post_cache.get({c.post_id for c in candidates}, self._post_data.get_posts)
        return [posts.get(c.post_id) for c in candidates]


class CoreDataHydrator(_PostLookup):
    """Created time, text and reply/repost links; a missing post keeps ``text=None`` (filtered next).

    A plain repost (no text of its own) takes its original's text, so muted
    keywords apply to reposts too (the reference's core data carries the
    "RT" text for the same effect).
    """

    async def hydrate(self, query: ForYouQuery, candidates: Sequence[PostCandidate]) -> list[Post | None]:
        posts = await super().hydrate(query, candidates)
        wanted = sorted({p.repost_of_post_id for p in posts if p is not None and p.repost_of_post_id and not p.text})
        originals = await query.post_cache.get(wanted, self._post_data.get_posts) if wanted else {}
        return [_with_original_text(p, originals) for p in posts]

    def update(self, candidate: PostCandidate, post: Post | None) -> None:
        if post is None:
            return
        candidate.created_at_ms = post.created_at_ms
        candidate.text = post.text
        candidate.in_reply_to_post_id = post.in_reply_to_post_id
        candidate.repost_of_post_id = post.repost_of_post_id
        candidate.repost_of_user_id = post.repost_of_user_id
        candidate.has_link = post.has_link


class VideoDurationHydrator(_PostLookup):
    """Duration of the post's first video (the weighted scorer gates video-quality-view on it)."""

    def update(self, candidate: PostCandidate, post: Post | None) -> None:
        candidate.video_duration_ms = post.video_duration_ms() if post is not None else None


class SubscriptionHydrator(_PostLookup):
    """``subscription_author_id`` = the author, for subscriber-only posts."""

    def update(self, candidate: PostCandidate, post: Post | None) -> None:
        candidate.subscription_author_id = post.author_id if post is not None and post.subscription_only else None


class AuthorInfoHydrator(Hydrator[ForYouQuery, PostCandidate, tuple[UserProfile | None, UserProfile | None]]):
    """Author screen name and follower count, and the reposted user's screen name.

    Thunder candidates carry the reposted user; for the others it looks the
    posts up (this hydrator runs beside the core-data one, so it cannot wait for it).
    """

    def __init__(self, post_data: PostDataClient) -> None:
        self._post_data = post_data

    async def hydrate(
        self, query: ForYouQuery, candidates: Sequence[PostCandidate]
    ) -> list[tuple[UserProfile | None, UserProfile | None]]:
        unknown = sorted({c.post_id for c in candidates if c.repost_of_user_id is None})
        posts = await query.post_cache.get(unknown, self._post_data.get_posts) if unknown else {}
        reposted = [c.repost_of_user_id or _reposted_user(posts.get(c.post_id)) for c in candidates]
        user_ids = {c.author_id for c in candidates} | {u for u in reposted if u is not None}
        profiles = await self._post_data.get_user_profiles(sorted(user_ids))
        return [
            (profiles.get(c.author_id), profiles.get(r) if r is not None else None)
            for c, r in zip(candidates, reposted)
        ]

    def update(self, candidate: PostCandidate, value: tuple[UserProfile | None, UserProfile | None]) -> None:
        author, reposted = value
        if author is not None:
            candidate.author_screen_name = author.screen_name
            candidate.author_followers_count = author.followers_count
        if reposted is not None:
            candidate.repost_screen_name = reposted.screen_name


def _with_original_text(post: Post | None, originals: dict[int, Post]) -> Post | None:
    if post is None or post.text or post.repost_of_post_id not in originals:
        return post
    original = originals[post.repost_of_post_id]  # a repost shows the original: its text and its link
    return msgspec.structs.replace(post, text=original.text, has_link=original.has_link)


def _reposted_user(post: Post | None) -> int | None:
    return post.repost_of_user_id if post is not None else None
