"""Pre-scoring filters (reference ``home-mixer/filters/``), in the order the pipeline runs them."""

from __future__ import annotations

from collections.abc import Callable

from xserve.mixer.bloom import may_contain
from xserve.mixer.query import ForYouQuery
from xserve.mixer.tokenize import KeywordMatcher
from xserve.pipeline import Filter, FilterResult
from xserve.schema import PostCandidate

__all__ = [
    "AgeFilter",
    "AuthorSocialgraphFilter",
    "CoreDataHydrationFilter",
    "DropDuplicatesFilter",
    "IneligibleSubscriptionFilter",
    "MutedKeywordFilter",
    "PreviouslySeenFilter",
    "PreviouslyServedFilter",
    "RepostDeduplicationFilter",
    "SelfPostFilter",
]

Candidates = list[PostCandidate]


def partition(candidates: Candidates, remove: Callable[[PostCandidate], bool]) -> FilterResult[PostCandidate]:
    """Split ``candidates`` keeping order; ``remove(c)`` True sends ``c`` to ``removed``."""
    result: FilterResult[PostCandidate] = FilterResult([], [])
    for c in candidates:
        (result.removed if remove(c) else result.kept).append(c)
    return result


class DropDuplicatesFilter(Filter[ForYouQuery, PostCandidate]):
    """Second and later occurrences of a post id (the first, i.e. the earlier source's, wins)."""

    def filter(self, query: ForYouQuery, candidates: Candidates) -> FilterResult[PostCandidate]:
        seen: set[int] = set()

        def duplicate(c: PostCandidate) -> bool:
            if c.post_id in seen:
                return True
            seen.add(c.post_id)
            return False

        return partition(candidates, duplicate)


class CoreDataHydrationFilter(Filter[ForYouQuery, PostCandidate]):
    """Posts whose core data did not hydrate (``text`` None, or no author).

    The reference also drops empty text; a media-only post has empty text here
    and is kept.
    """

    def filter(self, query: ForYouQuery, candidates: Candidates) -> FilterResult[PostCandidate]:
        return partition(candidates, lambda c: c.text is None or c.author_id <= 0)


class AgeFilter(Filter[ForYouQuery, PostCandidate]):
    """Posts older than ``max_age_ms`` at request time, or of unknown age; not an ad's creative (a campaign
    outlives the organic window)."""

    def __init__(self, max_age_ms: int) -> None:
        self.max_age_ms = max_age_ms

    def filter(self, query: ForYouQuery, candidates: Candidates) -> FilterResult[PostCandidate]:
        oldest = query.now_ms - self.max_age_ms
        return partition(candidates, lambda c: c.ad is None and (c.created_at_ms is None or c.created_at_ms < oldest))


class SelfPostFilter(Filter[ForYouQuery, PostCandidate]):
    """The viewer's own posts."""

    def filter(self, query: ForYouQuery, candidates: Candidates) -> FilterResult[PostCandidate]:
        return partition(candidates, lambda c: c.author_id == query.viewer_id)


class RepostDeduplicationFilter(Filter[ForYouQuery, PostCandidate]):
    """A repost whose original already appeared earlier in the list, as itself or as another repost.

    Originals register their own id but are never removed, so an original that
    comes after a repost of itself is kept (as the reference does).
    """

    def filter(self, query: ForYouQuery, candidates: Candidates) -> FilterResult[PostCandidate]:
        seen: set[int] = set()

        def duplicate(c: PostCandidate) -> bool:
            if c.repost_of_post_id is None:
                seen.add(c.post_id)
                return False
            if c.repost_of_post_id in seen:
                return True
            seen.add(c.repost_of_post_id)
            return False

        return partition(candidates, duplicate)


class IneligibleSubscriptionFilter(Filter[ForYouQuery, PostCandidate]):
    """Subscriber-only posts of authors the viewer does not subscribe to."""

    def filter(self, query: ForYouQuery, candidates: Candidates) -> FilterResult[PostCandidate]:
        subscribed = query.features.subscribed_user_ids
        return partition(
            candidates, lambda c: c.subscription_author_id is not None and c.subscription_author_id not in subscribed
        )


class PreviouslySeenFilter(Filter[ForYouQuery, PostCandidate]):
    """Posts whose related ids (the post, its original, its parent) were seen: listed, or in a Bloom filter."""

    def filter(self, query: ForYouQuery, candidates: Candidates) -> FilterResult[PostCandidate]:
        seen, blooms = query.seen_ids, query.bloom_filters

        def was_seen(c: PostCandidate) -> bool:
            return any(i in seen or any(may_contain(b, i) for b in blooms) for i in c.related_post_ids())

        return partition(candidates, was_seen)


class PreviouslyServedFilter(Filter[ForYouQuery, PostCandidate]):
    """On a bottom ("load more") request, posts whose related ids were already served: listed by the client,
    or recorded by the server (``ServedHistoryQueryHydrator``)."""

    def enable(self, query: ForYouQuery) -> bool:
        return query.is_bottom_request

    def filter(self, query: ForYouQuery, candidates: Candidates) -> FilterResult[PostCandidate]:
        served = query.previously_served
        return partition(candidates, lambda c: any(i in served for i in c.related_post_ids()))


class MutedKeywordFilter(Filter[ForYouQuery, PostCandidate]):
    """Posts whose text contains a muted keyword: whole words in spaced scripts, anywhere in a run of unspaced
    script (Chinese, Japanese, Thai, ...) or of emoji (see ``tokenize``)."""

    def enable(self, query: ForYouQuery) -> bool:
        return bool(query.features.muted_keywords)

    def filter(self, query: ForYouQuery, candidates: Candidates) -> FilterResult[PostCandidate]:
        matcher = KeywordMatcher(query.features.muted_keywords)
        return partition(candidates, lambda c: bool(c.text) and matcher.matches(c.text))


class AuthorSocialgraphFilter(Filter[ForYouQuery, PostCandidate]):
    """Posts by an author the viewer blocked or muted.

    Beyond January (the reference added it in May): a repost of a blocked or
    muted user's post is removed too.
    """

    def filter(self, query: ForYouQuery, candidates: Candidates) -> FilterResult[PostCandidate]:
        features = query.features
        hidden = features.blocked_user_ids | features.muted_user_ids
        return partition(candidates, lambda c: c.author_id in hidden or c.repost_of_user_id in hidden)
