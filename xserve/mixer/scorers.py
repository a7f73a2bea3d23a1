"""Scorers (reference ``home-mixer/scorers/``), run in this order:

``PhoenixScorer`` (action probabilities from the ranker) -> ``WeightedScorer``
(one number per post) -> ``AuthorDiversityScorer`` (repeat authors decay) ->
``OONScorer`` (out-of-network discount) -> ``NegativeFeedbackScorer`` (the
viewer's faded negatives on the author) -> ``ColdStartScorer`` (one small
author's new post lifted into the cold-start slot, ``cold_start.py``) ->
``RecencyFallbackScorer`` (posts the ranker could not score: newest first, below
every ranked post).

Weighted score, per candidate with probabilities ``p`` and weights ``w``::

    combined = Σ_a w_a·p_a + w_dwell_time·dwell_time     (VQV term only if video > min_video_duration_ms)
    positive_sum = Σ max(w, 0) over all 19 weights
    negative_sum = Σ max(-w, 0) over all 19 weights      (a magnitude: 367.2 with the defaults)
    total = positive_sum + negative_sum
    weighted = max(combined, 0)                           if total == 0
             = (combined + negative_sum) / total · offset  if combined < 0   (squeezed into [0, offset))
             = combined + offset                           otherwise         (at least offset)

so a net-negative post ranks below every non-negative one while negatives
keep their relative order. The reference then applies an unpublished
``normalize_score``; xserve uses the identity.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

from msgspec.structs import astuple

from xserve.clock import DAY_MS, HOUR_MS
from xserve.config import NegativeFeedbackConfig, ScoringConfig, ScoringWeights
from xserve.mixer.protocols import RankerClient
from xserve.mixer.query import ForYouQuery
from xserve.pipeline import Scorer
from xserve.schema import Action, ActionScores, PostCandidate, RankCandidate, RankRequest

__all__ = [
    "AuthorDiversityScorer",
    "NegativeFeedbackScorer",
    "OONScorer",
    "PhoenixScorer",
    "RecencyFallbackScorer",
    "WeightedScorer",
]

Multiplied = tuple[float, float | None]  # (multiplier, new score)


Prediction = tuple[ActionScores, str, int, str]  # (probabilities, prediction request id, scored as of ms, model version)


class PhoenixScorer(Scorer[ForYouQuery, PostCandidate, Prediction]):
    """Per-action probabilities from the ranker; a repost is scored as its original post and author.

    Each scored post also carries the prediction's request id (the request's
    id: one ranker call per request) and the time it was scored as of (the
    ``now_ms`` the ranker was given), as the reference's ``prediction_request_id``
    and ``last_scored_at_ms``. Without an engagement history, or when the ranker
    fails, it raises: the pipeline reports it degraded and candidates stay unscored.
    """

    def __init__(self, ranker: RankerClient) -> None:
        self._ranker = ranker

    async def score(self, query: ForYouQuery, candidates: Sequence[PostCandidate]) -> list[Prediction]:
        if not candidates:
            return []
        if not query.history:
            raise RuntimeError("no engagement history: candidates left unscored")
        ranked = tuple(_as_ranked(c) for c in candidates)
        req = RankRequest(user_id=query.viewer_id, history=query.history, candidates=ranked, now_ms=query.now_ms,
                          context=query.user_context)
        ranked_by = await self._ranker.rank(req)  # one call, so one model version for the whole request
        return [(scores, query.request_id, req.now_ms, ranked_by.model_version) for scores in ranked_by.scores]

    def update(self, candidate: PostCandidate, value: Prediction) -> None:
        (candidate.action_scores, candidate.prediction_request_id, candidate.last_scored_at_ms,
         candidate.model_version) = value


def _as_ranked(c: PostCandidate) -> RankCandidate:
    # a repost's text is the original's (CoreDataHydrator), as its ids are
    if c.repost_of_post_id is None:
        return RankCandidate(post_id=c.post_id, author_id=c.author_id, created_at_ms=c.created_at_ms, text=c.text or "")
    return RankCandidate(post_id=c.repost_of_post_id, author_id=c.repost_of_user_id or c.author_id,
                         created_at_ms=c.created_at_ms, text=c.text or "")


class WeightedScorer(Scorer[ForYouQuery, PostCandidate, float | None]):
    """Σ weight·probability with the negative squeeze (module docstring); None when unscored."""

    def __init__(self, config: ScoringConfig) -> None:
        self.weights = config.weights
        self.min_video_duration_ms = config.min_video_duration_ms
        self.negative_scores_offset = config.negative_scores_offset
        values = [getattr(config.weights, f) for f in ScoringWeights.__struct_fields__]
        self._negative_sum = sum(-w for w in values if w < 0)
        self._total_sum = sum(w for w in values if w > 0) + self._negative_sum
        # weights aligned with ActionScores' fields (the actions + dwell_time; 0 for the value model's durations),
        # with and without the VQV term: one dot product per candidate (the oracle test checks they agree).
        # January's sum has no link gate: link_open's weight is 0 unless configured (the value model gates it).
        self._with_vqv = tuple(getattr(config.weights, f, 0.0) for f in ActionScores.__struct_fields__)
        vqv = ActionScores.__struct_fields__.index(Action.VIDEO_QUALITY_VIEW.value)
        self._without_vqv = self._with_vqv[:vqv] + (0.0,) + self._with_vqv[vqv + 1 :]

    def combined(self, scores: ActionScores, video_duration_ms: int | None) -> float:
        """Σ w·p + w_dwell_time·dwell_time, the VQV term only for videos over ``min_video_duration_ms``."""
        long_video = video_duration_ms is not None and video_duration_ms > self.min_video_duration_ms
        return sum(map(operator.mul, self._with_vqv if long_video else self._without_vqv, astuple(scores)))

    def offset(self, combined: float) -> float:
        if self._total_sum == 0:
            return max(combined, 0.0)
        if combined < 0:
            return (combined + self._negative_sum) / self._total_sum * self.negative_scores_offset
        return combined + self.negative_scores_offset

    async def score(self, query: ForYouQuery, candidates: Sequence[PostCandidate]) -> list[float | None]:
        return [
            None if c.action_scores is None else self.offset(self.combined(c.action_scores, c.video_duration_ms))
            for c in candidates
        ]

    def update(self, candidate: PostCandidate, value: float | None) -> None:
        candidate.weighted_score = value
        candidate.score = value


class AuthorDiversityScorer(Scorer[ForYouQuery, PostCandidate, Multiplied]):
    """An author's k-th best post (by weighted score, whole set) gets ``(1-floor)·decay^k + floor``."""

    def __init__(self, decay: float, floor: float) -> None:
        self.decay = decay
        self.floor = floor

    def multiplier(self, k: int) -> float:
        return (1.0 - self.floor) * self.decay**k + self.floor

    async def score(self, query: ForYouQuery, candidates: Sequence[PostCandidate]) -> list[Multiplied]:
        order = sorted(range(len(candidates)), key=lambda i: -_or_neg_inf(candidates[i].weighted_score))
        seen: dict[int, int] = {}
        out: list[Multiplied] = [(1.0, None)] * len(candidates)
        for i in order:
            c = candidates[i]
            k = seen.get(c.author_id, 0)
            seen[c.author_id] = k + 1
            m = self.multiplier(k)
            out[i] = (m, None if c.weighted_score is None else c.weighted_score * m)
        return out

    def update(self, candidate: PostCandidate, value: Multiplied) -> None:
        candidate.diversity_multiplier, candidate.score = value


class OONScorer(Scorer[ForYouQuery, PostCandidate, Multiplied]):
    """Out-of-network posts (``in_network`` False, not None) are multiplied by ``factor``."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    async def score(self, query: ForYouQuery, candidates: Sequence[PostCandidate]) -> list[Multiplied]:
        out: list[Multiplied] = []
        for c in candidates:
            m = self.factor if c.in_network is False else 1.0
            out.append((m, None if c.score is None else c.score * m))
        return out

    def update(self, candidate: PostCandidate, value: Multiplied) -> None:
        candidate.oon_multiplier, candidate.score = value


class NegativeFeedbackScorer(Scorer[ForYouQuery, PostCandidate, Multiplied]):
    """The viewer's past negatives on a post's author (or on the reposted author) multiply its score, faded by age::

        multiplier = max(floor, Π_signals (1 - weight(action) · 0.5^(age / half_life)))

    over the latest signal of each negative action per author (``UserFeatures.negative_feedback``), age
    measured from the request's ``now_ms``. A not-interested from yesterday (weight 0.5) gives ~0.51; one from
    60 days ago (two half-lives) 0.875. Blocks and mutes in place are filters (``AuthorSocialgraphFilter``),
    before this: a demotion never stands in for them. Unscored posts keep ``score=None``.
    """

    def __init__(self, config: NegativeFeedbackConfig) -> None:
        self.config = config

    def __repr__(self) -> str:
        return f"NegativeFeedbackScorer(half_life={self.config.half_life_ms / DAY_MS:g}d, floor={self.config.floor})"

    def multipliers(self, query: ForYouQuery) -> dict[int, float]:
        """Author id -> multiplier, for the authors the viewer gave negative feedback on."""
        out: dict[int, float] = {}
        for signal in query.features.negative_feedback:
            age = max(query.now_ms - signal.timestamp_ms, 0)
            faded = self.config.weight(signal.action) * 0.5 ** (age / self.config.half_life_ms)
            out[signal.author_id] = out.get(signal.author_id, 1.0) * (1.0 - faded)
        return {author: max(self.config.floor, m) for author, m in out.items()}

    async def score(self, query: ForYouQuery, candidates: Sequence[PostCandidate]) -> list[Multiplied]:
        by_author = self.multipliers(query)
        out: list[Multiplied] = []
        for c in candidates:
            m = by_author.get(c.author_id, 1.0)
            if c.repost_of_user_id is not None and c.repost_of_user_id != c.author_id:
                m = max(self.config.floor, m * by_author.get(c.repost_of_user_id, 1.0))
            out.append((m, None if c.score is None else c.score * m))
        return out

    def update(self, candidate: PostCandidate, value: Multiplied) -> None:
        candidate.negative_feedback_multiplier, candidate.score = value


class RecencyFallbackScorer(Scorer[ForYouQuery, PostCandidate, float | None]):
    """Scores posts the ranker did not: ``-1 - age_hours``, so newest first and below every ranked post.

    Ranked scores are never negative (the weighted score is at least 0 and the
    multipliers are positive), so when the ranker is down the whole feed comes
    back in reverse-chronological order, like Twitter's backup timeline.
    """

    async def score(self, query: ForYouQuery, candidates: Sequence[PostCandidate]) -> list[float | None]:
        return [c.score if c.score is not None else _recency(query.now_ms, c.created_at_ms) for c in candidates]

    def update(self, candidate: PostCandidate, value: float | None) -> None:
        candidate.score = value


def _recency(now_ms: int, created_at_ms: int | None) -> float:
    if created_at_ms is None:
        return float("-inf")
    return -1.0 - max(now_ms - created_at_ms, 0) / HOUR_MS


def _or_neg_inf(x: float | None) -> float:
    return float("-inf") if x is None or x != x else x
