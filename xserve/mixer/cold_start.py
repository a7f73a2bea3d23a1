"""Cold start for new posts of small authors (reference ``AuthorColdStart``, October 2026 parameters).

A new post has no engagement to be ranked by, so a small author's post may
never be seen. Per request, at most one post is lifted into the cold-start
slot, a position drawn from ``[slot_min, slot_max)`` (0-based; 15 by
default), after every other scorer:

1. **target**: the final scores of the ranked posts, sorted; the score at the
   drawn slot is the target (fewer than ``slot_min + 1`` ranked posts: no lift).
2. **eligible**: an original post (not a reply, not a repost) by an author with
   at most ``follower_cap`` followers, created at most ``max_post_age_ms``
   before the request, shown to fewer than ``impression_threshold`` viewers,
   ranked in the top ``max_position_ratio`` of the ranked posts (the bottom is
   never lifted) but below the target (ours: a post already above the slot
   would waste it).
3. **pick** (Thompson sampling): each eligible post draws a favorite rate from
   ``Beta(alpha0 + f, beta0 + n - f)`` where ``n`` = impressions ×
   ``impression_scale`` and ``f`` = min(favorites, n); of the ``top_k`` best
   draws, the one the ranker scored highest wins. With the prior
   Beta(0.75, 49.25) (a 1.5 % favorite rate worth 50 impressions), a post that
   few have seen draws widely and gets its chance; one that was seen and not
   liked draws low. Without sampling, the best-scored eligible post wins.
4. **lift**: the winner's score becomes just above the target, so it takes
   the slot (``source: "cold_start"`` in the feed; explain shows the pick).

Sampling is seeded by ``(seed, request id)``: the same request draws the same
posts (tests fix the request id), different requests explore differently.
Impressions come through :class:`~xserve.mixer.protocols.ImpressionCountClient`,
favorites through :class:`~xserve.mixer.protocols.PostStatsClient`, asked only
for the eligible posts.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Sequence

from xserve.config import ColdStartConfig
from xserve.mixer.protocols import ImpressionCountClient, PostStatsClient
from xserve.mixer.query import ForYouQuery
from xserve.pipeline import Scorer
from xserve.schema import ColdStartPick, PostCandidate, PostStats

__all__ = ["ColdStartPolicy", "ColdStartScorer"]

Lift = tuple[ColdStartPick | None, float | None]  # (the pick, the new score) per candidate


class ColdStartPolicy:
    """The pure rules of the module docstring: eligibility, the target, the pick (no I/O)."""

    def __init__(self, config: ColdStartConfig) -> None:
        self.config = config

    def __repr__(self) -> str:
        c = self.config
        return (f"ColdStartPolicy(slots=[{c.slot_min},{c.slot_max}), impressions<{c.impression_threshold}, "
                f"followers<={c.follower_cap}, thompson={c.thompson_sampling}, prior=Beta({c.beta_alpha0},{c.beta_beta0}), "
                f"top_k={c.top_k})")

    def rng(self, request_id: str) -> random.Random:
        return random.Random(f"cold_start:{self.config.seed}:{request_id}")  # str seeds hash stably (sha512)

    def target(self, ranked_scores: Sequence[float], rng: random.Random) -> float | None:
        """The score at the drawn slot among ``ranked_scores`` (any order), or None when there are too few."""
        ordered = sorted(ranked_scores, reverse=True)
        hi = min(self.config.slot_max, len(ordered))
        lo = min(self.config.slot_min, hi)
        return ordered[rng.randrange(lo, hi)] if lo < hi else None

    def eligible(self, candidates: Sequence[PostCandidate], now_ms: int, target: float) -> list[int]:
        """Indices of the candidates that may be lifted (before their impressions are known)."""
        c = self.config
        ranked = sorted((i for i, x in enumerate(candidates) if _ranked(x)), key=lambda i: -candidates[i].score)
        cut = int(c.max_position_ratio * len(ranked))
        return sorted(
            i for i in ranked[:cut]
            if (x := candidates[i]).score < target and x.ad is None  # an ad's slot is the blender's
            and x.in_reply_to_post_id is None and x.repost_of_post_id is None
            and x.author_followers_count is not None and x.author_followers_count <= c.follower_cap
            and x.created_at_ms is not None and 0 <= now_ms - x.created_at_ms <= c.max_post_age_ms
        )

    def sample(self, impressions: int, favorites: int, rng: random.Random) -> float:
        n = self.config.impression_scale * impressions
        f = min(float(favorites), n)
        return rng.betavariate(self.config.beta_alpha0 + f, self.config.beta_beta0 + max(n - f, 0.0))

    def pick(self, scores: dict[int, float], impressions: dict[int, int], favorites: dict[int, int],
             rng: random.Random) -> tuple[int, float] | None:
        """Of the eligible indices (``scores``' keys) seen by fewer than the threshold: the winner and its draw
        (-1 when not sampled)."""
        fresh = sorted(i for i in scores if impressions.get(i, 0) < self.config.impression_threshold)
        if not fresh:
            return None
        if not self.config.thompson_sampling:
            return max(fresh, key=lambda i: (scores[i], -i)), -1.0
        draws = {i: self.sample(impressions.get(i, 0), favorites.get(i, 0), rng) for i in fresh}
        top = sorted(fresh, key=lambda i: (-draws[i], i))[: self.config.top_k]
        best = max(top, key=lambda i: (scores[i], -i))
        return best, draws[best]


class ColdStartScorer(Scorer[ForYouQuery, PostCandidate, Lift]):
    """Lifts at most one small author's new post into the cold-start slot (module docstring)."""

    def __init__(self, impressions: ImpressionCountClient, stats: PostStatsClient, config: ColdStartConfig) -> None:
        self._impressions = impressions
        self._stats = stats
        self.policy = ColdStartPolicy(config)

    async def score(self, query: ForYouQuery, candidates: Sequence[PostCandidate]) -> list[Lift]:
        out: list[Lift] = [(None, c.score) for c in candidates]
        rng = self.policy.rng(query.request_id)
        target = self.policy.target([c.score for c in candidates if _ranked(c)], rng)
        if target is None:
            return out
        eligible = self.policy.eligible(candidates, query.now_ms, target)
        if not eligible:
            return out
        post_ids = sorted({candidates[i].post_id for i in eligible})
        shown, stats = await asyncio.gather(
            self._impressions.impression_counts(post_ids, query.now_ms), self._stats.post_stats(post_ids, query.now_ms)
        )
        impressions = {i: shown.get(candidates[i].post_id, 0) for i in eligible}
        favorites = {i: stats.get(candidates[i].post_id, _NONE).favorites for i in eligible}
        picked = self.policy.pick({i: candidates[i].score for i in eligible}, impressions, favorites, rng)
        if picked is not None:
            i, draw = picked
            before = candidates[i].score
            out[i] = (ColdStartPick(impressions[i], favorites[i], draw, target, before), math.nextafter(target, math.inf))
        return out

    def update(self, candidate: PostCandidate, value: Lift) -> None:
        candidate.cold_start, candidate.score = value


_NONE = PostStats()


def _ranked(c: PostCandidate) -> bool:
    """Scored by the ranker (the recency fallback's scores are not a ranking to place a slot in)."""
    return c.action_scores is not None and c.score is not None and c.score == c.score
