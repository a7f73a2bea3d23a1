"""Post-selection stages: visibility labels, the visibility filter and conversation dedup.

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
from xserve.schema import PostCandidate, VisibilityLabel

__all__ = ["DedupConversationFilter", "VisibilityFilter", "VisibilityHydrator"]

Labels = tuple[VisibilityLabel, ...]


class VisibilityHydrator(Hydrator[ForYouQuery, PostCandidate, tuple[Labels, str | None]]):
    """Current safety labels of each selected post, of the original for a repost and of the quoted post for a
    quote, and the verdict at its level.

    Followed content is checked at the in-network level and recommendations at
    the stricter out-of-network one (reference safety levels ``TimelineHome``
    and ``TimelineHomeRecommendations``); a post whose in-network flag is
    unknown gets the stricter one. The verdict (``visibility_reason``) names
    the labels that its level drops, or is None when the post may be served.
    A post (or reposted original, or quoted post) that is gone counts as
    ``DELETED``, so a quote leaves the feed with the post it quotes, as in the
    reference (deleting a post also deletes its quotes, ``QuotedPostDeleted``;
    this check covers a quote the delete did not find).
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
        quoted = {p.quote_of_post_id for p in posts.values() if p.quote_of_post_id} - posts.keys()
        if quoted:  # the quoted posts of the posts and of reposted originals, in a second lookup
            posts = {**posts, **await query.post_cache.get(quoted, self._post_data.get_posts)}

        def own(post_id: int) -> Labels:
            return posts[post_id].labels if post_id in posts else (VisibilityLabel.DELETED,)

        def labels(post_id: int | None) -> Labels:  # the post's and its quoted post's (one level, as fetched)
            if post_id is None:
                return ()
            post = posts.get(post_id)
            if post is None:
                return (VisibilityLabel.DELETED,)
            return post.labels + (own(post.quote_of_post_id) if post.quote_of_post_id else ())

        out: list[tuple[Labels, str | None]] = []
        for c in candidates:
            found = tuple(dict.fromkeys(labels(c.post_id) + labels(c.repost_of_post_id)))  # de-duplicated, in order
            drop = self.in_network_drop if c.in_network is True else self.out_of_network_drop
            dropped = [str(label) for label in found if label in drop]
            out.append((found, ",".join(dropped) or None))
        return out

    def update(self, candidate: PostCandidate, value: tuple[Labels, str | None]) -> None:
        candidate.visibility_labels, candidate.visibility_reason = value


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
