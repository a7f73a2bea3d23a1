"""Selector (reference ``TopKScoreSelector``): the ``top_k`` best by final score."""

from __future__ import annotations

from xserve.mixer.query import ForYouQuery
from xserve.pipeline import TopKSelector
from xserve.schema import PostCandidate

__all__ = ["TopKScoreSelector"]


class TopKScoreSelector(TopKSelector[ForYouQuery, PostCandidate]):
    """Stable descending sort by ``score`` (None and NaN last), keeping ``size``."""

    def __init__(self, size: int) -> None:
        self.size = size

    def score(self, candidate: PostCandidate) -> float | None:
        return candidate.score
