"""Post-selection stages: visibility labels, the visibility filter and conversation dedup.

They run only on the top-K, after scoring, because visibility checks are the
expensive per-post calls (reference ``VFCandidateHydrator``, ``VFFilter``,
``DedupConversationFilter``).
"""

from __future__ import annotations

from collections.abc import Sequence

from xserve.mixer.protocols import PostDataClient
from xserve.mixer.filters import Candidates, partition
from xserve.mixer.query import ForYouQuery
from xserve.pipeline import Filter, FilterResult, Hydrator
from xserve.schema import PostCandidate, VisibilityLabel

__all__ = ["DedupConversationFilter", "VisibilityFilter", "VisibilityHydrator"]

Labels = tuple[VisibilityLabel, ...]


class VisibilityHydrator(Hydrator[ForYouQuery, PostCandidate, Labels]):
    """Current safety labels of each selected post, and of the original for a repost.

    A post (or reposted original) that is gone counts as ``DELETED``.
    """

    def __init__(self, post_data: PostDataClient) -> None:
        self._post_data = post_data

    async def hydrate(self, query: ForYouQuery, candidates: Sequence[PostCandidate]) -> list[Labels]:
        ids = {c.post_id for c in candidates} | {c.repost_of_post_id for c in candidates if c.repost_of_post_id}
        posts = await query.post_cache.get(ids, self._post_data.get_posts)

        def labels(post_id: int) -> Labels:
            return posts[post_id].labels if post_id in posts else (VisibilityLabel.DELETED,)

        out: list[Labels] = []
        for c in candidates:
            found = labels(c.post_id) + (labels(c.repost_of_post_id) if c.repost_of_post_id else ())
            out.append(tuple(dict.fromkeys(found)))  # de-duplicated, in order
        return out

    def update(self, candidate: PostCandidate, value: Labels) -> None:
        candidate.visibility_labels = value


class VisibilityFilter(Filter[ForYouQuery, PostCandidate]):
    """Posts with any visibility label.

    A post whose labels were never fetched (``None``) is removed too: what
    cannot be checked is not served (the builder also makes a failing
    ``VisibilityHydrator`` drop every post it was given).
    """

    def filter(self, query: ForYouQuery, candidates: Candidates) -> FilterResult[PostCandidate]:
        return partition(candidates, lambda c: c.visibility_labels is None or bool(c.visibility_labels))


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
