"""Candidate sources (reference ``home-mixer/sources/``).

``build_for_you_pipeline`` lists Phoenix before Thunder, as the reference does:
sources are concatenated in list order, so when both return the same post the
``DropDuplicatesFilter`` keeps the Phoenix (out-of-network) copy. The popular
source (ours, issue 17) comes last: it adds the popular posts the other two
did not bring.
"""

from __future__ import annotations

from xserve.config import PopularConfig
from xserve.mixer.protocols import InNetworkClient, PostStatsClient, RetrievalClient
from xserve.mixer.query import ForYouQuery
from xserve.pipeline import Source
from xserve.schema import InNetworkRequest, LightPost, PopularRequest, PostCandidate, RetrievalRequest, ServedType

__all__ = ["PhoenixSource", "PopularSource", "ThunderSource"]


class ThunderSource(Source[ForYouQuery, PostCandidate]):
    """In-network: recent posts of the accounts the viewer follows.

    Thunder shards that failed are named in ``query.left_out`` (the feed's
    ``degraded``); the other shards' posts are still candidates.
    """

    def __init__(self, in_network: InNetworkClient, max_results: int) -> None:
        self._in_network = in_network
        self.max_results = max_results

    async def get_candidates(self, query: ForYouQuery) -> list[PostCandidate]:
        if query.user_features is None:
            raise RuntimeError("user features not hydrated: the follow list is unknown")
        followed = tuple(sorted(query.user_features.followed_user_ids))
        if not followed:
            return []
        req = InNetworkRequest(viewer_id=query.viewer_id, followed_ids=followed, max_results=self.max_results)
        answer = await self._in_network.in_network_posts(req)
        query.left_out.extend(answer.left_out)
        return [_candidate(p) for p in answer.posts]


def _candidate(post: LightPost) -> PostCandidate:
    ancestors: tuple[int, ...] = ()
    if post.in_reply_to_post_id is not None:
        root = post.conversation_id
        ancestors = (post.in_reply_to_post_id,)
        if root is not None and root != post.in_reply_to_post_id:
            ancestors += (root,)
    return PostCandidate(
        post_id=post.post_id,
        author_id=post.author_id,
        served_type=ServedType.IN_NETWORK,
        created_at_ms=post.created_at_ms,
        in_reply_to_post_id=post.in_reply_to_post_id,
        repost_of_post_id=post.repost_of_post_id,
        repost_of_user_id=post.repost_of_user_id,
        ancestors=ancestors,
    )


class PhoenixSource(Source[ForYouQuery, PostCandidate]):
    """Out-of-network: posts nearest the viewer's embedding; needs an engagement history."""

    def __init__(self, retrieval: RetrievalClient, max_results: int) -> None:
        self._retrieval = retrieval
        self.max_results = max_results

    def enable(self, query: ForYouQuery) -> bool:
        return not query.in_network_only

    async def get_candidates(self, query: ForYouQuery) -> list[PostCandidate]:
        if not query.history:
            raise RuntimeError("no engagement history: out-of-network retrieval needs one")
        req = RetrievalRequest(
            user_id=query.viewer_id, history=query.history, max_results=self.max_results, now_ms=query.now_ms,
            context=query.user_context,
        )
        return [
            PostCandidate(
                post_id=p.post_id,
                author_id=p.author_id,
                served_type=ServedType.RETRIEVAL,
                in_reply_to_post_id=p.in_reply_to_post_id,
                retrieval_score=p.score,
            )
            for p in await self._retrieval.retrieve(req)
        ]


class PopularSource(Source[ForYouQuery, PostCandidate]):
    """Recent posts with the most engaged viewers (``popular.max_results``, created within ``popular.max_age_ms``),
    counted causally as of the request's ``now_ms`` by the post catalog's counters.

    Not for in-network-only feeds, like retrieval. Each post carries its count
    (``popular_engaged_users``; explain shows it) and ``source: "popular"``.
    """

    def __init__(self, stats: PostStatsClient, config: PopularConfig) -> None:
        self._stats = stats
        self.max_results = config.max_results
        self.max_age_ms = config.max_age_ms
        self.min_engaged_users = config.min_engaged_users

    def enable(self, query: ForYouQuery) -> bool:
        return self.max_results > 0 and not query.in_network_only

    async def get_candidates(self, query: ForYouQuery) -> list[PostCandidate]:
        req = PopularRequest(query.now_ms, self.max_age_ms, self.max_results, self.min_engaged_users)
        return [
            PostCandidate(
                post_id=p.post_id,
                author_id=p.author_id,
                served_type=ServedType.POPULAR,
                created_at_ms=p.created_at_ms,
                popular_engaged_users=p.engaged_users,
            )
            for p in await self._stats.popular_posts(req)
        ]
