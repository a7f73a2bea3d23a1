"""Post-selection stages: visibility labels (with their propagation from related posts), the visibility filter
and conversation dedup.

They run only on the top-K, after scoring, because visibility checks are the
expensive per-post calls (reference ``VFCandidateHydrator``, ``VFFilter``,
``DedupConversationFilter``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from xserve.mixer.protocols import PostDataClient
from xserve.mixer.filters import Candidates, partition
from xserve.mixer.query import ForYouQuery
from xserve.pipeline import Filter, FilterResult, Hydrator
from xserve.schema import Post, PostCandidate, VisibilityLabel

__all__ = ["DedupConversationFilter", "VisibilityFilter", "VisibilityHydrator"]

Labels = tuple[VisibilityLabel, ...]


class VisibilityHydrator(Hydrator[ForYouQuery, PostCandidate, tuple[Labels, str | None]]):
    """Current safety labels of each selected post and of the posts it shows or answers, and the verdict at
    its level.

    Followed content is checked at the in-network level and recommendations at
    the stricter out-of-network one (reference safety levels ``TimelineHome``
    and ``TimelineHomeRecommendations``); a post whose in-network flag is
    unknown gets the stricter one. The verdict (``visibility_reason``) names
    the labels that its level drops, or is None when the post may be served.

    Propagation: a post carries the labels of its related posts, one level
    deep: the original it reposts, the post it quotes and the post it replies
    to, and for a repost also the original's quoted post and parent. So a post
    is dropped whenever a post it shows or answers would be dropped at the same
    level (the reference's ``AncillaryVFFilter``, May 2026). A related post that
    is gone counts as ``DELETED``, so a quote or a reply leaves the feed with
    the post it quotes or answers, as in the reference (deleting a post also
    deletes its quotes, ``QuotedPostDeleted``; this check covers a quote the
    delete did not find).
    """

    def __init__(
        self, post_data: PostDataClient, in_network_drop: Iterable[VisibilityLabel],
        out_of_network_drop: Iterable[VisibilityLabel],
    ) -> None:
        self._post_data = post_data
        self.in_network_drop = tuple(in_network_drop)
        self.out_of_network_drop = tuple(out_of_network_drop)

    async def hydrate(self, query: ForYouQuery, candidates: Sequence[PostCandidate]) -> list[tuple[Labels, str | None]]:
        ids = {c.post_id for c in candidates} | {c.repost_of_post_id for c in candidates if c.repost_of_post_id}
        posts = await query.post_cache.get(ids, self._post_data.get_posts)
        related = {r for p in posts.values() for r in _shown_or_answered(p)} - posts.keys()
        if related:  # the quoted posts and parents of the posts and of reposted originals, in a second lookup
            posts = {**posts, **await query.post_cache.get(related, self._post_data.get_posts)}

        def own(post_id: int) -> Labels:
            return posts[post_id].labels if post_id in posts else (VisibilityLabel.DELETED,)

        def labels(post_id: int | None) -> Labels:  # the post's, its quoted post's and its parent's (one level)
            if post_id is None:
                return ()
            post = posts.get(post_id)
            if post is None:
                return (VisibilityLabel.DELETED,)
            return post.labels + tuple(label for r in _shown_or_answered(post) for label in own(r))

        out: list[tuple[Labels, str | None]] = []
        for c in candidates:
            found = tuple(dict.fromkeys(labels(c.post_id) + labels(c.repost_of_post_id)))  # de-duplicated, in order
            drop = self.in_network_drop if c.in_network is True else self.out_of_network_drop
            dropped = [str(label) for label in found if label in drop]
            out.append((found, ",".join(dropped) or None))
        return out

    def update(self, candidate: PostCandidate, value: tuple[Labels, str | None]) -> None:
        candidate.visibility_labels, candidate.visibility_reason = value


def _shown_or_answered(post: Post) -> tuple[int, ...]:
    """The posts whose verdict ``post`` inherits besides its reposted original: the one it quotes, the one it answers."""
    return tuple(r for r in (post.quote_of_post_id, post.in_reply_to_post_id) if r is not None)


class VisibilityFilter(Filter[ForYouQuery, PostCandidate]):
    """Posts whose verdict at their level is to drop them (``visibility_reason`` set).

    A post whose labels were never fetched (``None``) is removed too: what
    cannot be checked is not served (the builder also makes a failing
    ``VisibilityHydrator`` drop every post it was given).
    """

    def filter(self, query: ForYouQuery, candidates: Candidates) -> FilterResult[PostCandidate]:
        return partition(candidates, lambda c: c.visibility_labels is None or c.visibility_reason is not None)


class DedupConversationFilter(Filter[ForYouQuery, PostCandidate]):
    """One post per conversation: the highest-scored (ties: the earlier one).

    The conversation of a post is the smallest of its ancestors, or the post
    itself when it has none (only in-network replies carry ancestors).
    """

    def filter(self, query: ForYouQuery, candidates: Candidates) -> FilterResult[PostCandidate]:
        best: dict[int, PostCandidate] = {}
        for c in candidates:
            key = conversation_id(c)
            if key not in best or _score(c) > _score(best[key]):
                best[key] = c
        return partition(candidates, lambda c: best[conversation_id(c)] is not c)


def conversation_id(c: PostCandidate) -> int:
    return min(c.ancestors) if c.ancestors else c.post_id


def _score(c: PostCandidate) -> float:
    return c.score if c.score is not None and c.score == c.score else float("-inf")
