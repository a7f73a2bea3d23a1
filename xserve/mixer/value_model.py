"""The value model: the score the reference's October release computes in its own crate (``xai-value-model``),
replacing January's weighted sum (``docs/reference.md`` §3.1). ``ValueModelScorer`` is the default scorer
(``scoring.scorer = "value_model"``); ``WeightedScorer`` (``scorers.py``) stays selectable as ``"weighted"``.

Per candidate with predicted probabilities ``p``, continuous predictions (seconds) and weights ``w``
(``scoring.weights``, the value model's own in ``scoring.value_model``)::

    terms:  w_a·p_a                 every action (VQV only for a video longer than min_video_duration_ms,
                                    link_open only for a post with an outbound link)
            w_dwell_time·dwell_time
            watch_time·P(video_open)·watch seconds           the three product terms: a probability times the
            profile_visit_time·P(profile_click)·visit seconds  predicted duration *given* that action (the
            click_dwell_time·P(click)·click-dwell seconds     duration heads are trained on rows with the action)
            mutual_follow_reply_boost·P(reply), mutual_follow_dwell_boost·P(dwell)
                                    for an original post (not a reply or repost) by an author who follows the
                                    viewer back
            author_exploration_bonus for an author the viewer neither follows nor has in the engagement history
    combined = Σ terms, then the January squeeze (``WeightedScorer.offset``) with sums over the perturbed weights.

**Per-user weight perturbation** (reference ``WeightPerturbationSigma``): every weight (each ``scoring.weights``
field and the three product weights) is multiplied by ``exp(±sigma)``, the sign the low bit of
``splitmix64`` (``xserve.sharding``, the one hash) chained over the user id and the bytes of ``"<salt>:<head>"``:
the same user always gets the same weights, a different salt reshuffles everyone. ``sigma = 0`` (the default)
leaves the weights as configured.

With the additions switched off (product weights, boosts, bonus and sigma 0) the value model equals the
weighted scorer exactly (``tests/mixer/test_value_model.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from msgspec.structs import astuple

from xserve.config import ScoringConfig, ScoringWeights
from xserve.mixer.query import ForYouQuery
from xserve.pipeline import Scorer
from xserve.schema import ACTIONS, Action, ActionScores, PostCandidate
from xserve.sharding import splitmix64

__all__ = ["PRODUCT_TERMS", "TERM_NAMES", "ValueModel", "ValueModelScorer", "combined_scores", "perturbation_sign",
           "term_matrix"]

# product term name -> (the action whose probability it multiplies, the ActionScores duration field)
PRODUCT_TERMS: dict[str, tuple[Action, str]] = {
    "watch_time": (Action.VIDEO_OPEN, "watch_time"),
    "profile_visit_time": (Action.PROFILE_CLICK, "profile_visit_time"),
    "click_dwell_time": (Action.CLICK, "click_dwell_time"),
}
_MASK = (1 << 64) - 1


def perturbation_sign(salt: str, user_id: int, head: str) -> float:
    """+1 or −1, fixed for (salt, user, head): the low bit of splitmix64 chained over the user and the bytes."""
    h = splitmix64(user_id & _MASK)
    for b in f"{salt}:{head}".encode():
        h = splitmix64(h ^ b)
    return 1.0 if h & 1 else -1.0


class ValueModel:
    """The value model's weights for one viewer, and its terms for one candidate (module docstring)."""

    def __init__(self, config: ScoringConfig, viewer_id: int) -> None:
        vm = config.value_model
        self.config = config
        base = {f: getattr(config.weights, f) for f in ScoringWeights.__struct_fields__}
        base.update({name: getattr(vm, name) for name in PRODUCT_TERMS})
        self.multipliers = {h: 1.0 for h in base}
        if vm.perturbation_sigma > 0:
            self.multipliers = {h: math.exp(vm.perturbation_sigma * perturbation_sign(vm.perturbation_salt, viewer_id, h))
                                for h in base}
        self.weights = {h: w * self.multipliers[h] for h, w in base.items()}
        actions = [self.weights[f] for f in ScoringWeights.__struct_fields__]  # the January sums, perturbed
        self.negative_sum = sum(-w for w in actions if w < 0)
        self.total_sum = sum(w for w in actions if w > 0) + self.negative_sum

    def terms(self, scores: ActionScores, c: PostCandidate, mutual: bool, unexplored: bool) -> dict[str, float]:
        """Every term of the candidate's combined score, by name (``mutual``: its author follows the viewer
        back; ``unexplored``: an author the viewer neither follows nor engaged with)."""
        w, vm = self.weights, self.config.value_model
        long_video = c.video_duration_ms is not None and c.video_duration_ms > self.config.min_video_duration_ms
        out: dict[str, float] = {}
        for a in ACTIONS:
            weight = w[a.value]
            if (a is Action.VIDEO_QUALITY_VIEW and not long_video) or (a is Action.LINK_OPEN and not c.has_link):
                weight = 0.0
            out[a.value] = weight * scores.get(a)
        out["dwell_time"] = w["dwell_time"] * scores.dwell_time
        for name, (action, duration) in PRODUCT_TERMS.items():
            out[name] = w[name] * scores.get(action) * getattr(scores, duration)
        boosted = mutual and c.in_reply_to_post_id is None and c.repost_of_post_id is None
        out["mutual_follow_reply_boost"] = vm.mutual_follow_reply_boost * scores.reply if boosted else 0.0
        out["mutual_follow_dwell_boost"] = vm.mutual_follow_dwell_boost * scores.dwell if boosted else 0.0
        out["author_exploration_bonus"] = vm.author_exploration_bonus if unexplored else 0.0
        return out

    def offset(self, combined: float) -> float:
        """The January squeeze (``WeightedScorer.offset``) with this viewer's sums."""
        offset = self.config.negative_scores_offset
        if self.total_sum == 0:
            return max(combined, 0.0)
        if combined < 0:
            return (combined + self.negative_sum) / self.total_sum * offset
        return combined + offset


Valued = tuple[float, dict[str, float] | None] | None  # (weighted score, its terms when explained); None = unscored

_FIELDS = ActionScores.__struct_fields__
_COL = {f: i for i, f in enumerate(_FIELDS)}


class ValueModelScorer(Scorer[ForYouQuery, PostCandidate, Valued]):
    """Sets ``weighted_score`` (and ``score``) from the value model, and ``score_terms`` when explained.

    The combined scores of a request's candidates are one numpy expression over a ``(C, fields)`` matrix of
    their predictions (2,000 candidates in a few ms); an ``explain`` request gets every term from one
    ``(C, terms)`` matrix (``term_matrix``), and ``ValueModel.terms`` builds the same terms one candidate at a
    time, the reference the tests hold both to (``tests/mixer/test_value_model.py``).
    """

    def __init__(self, config: ScoringConfig) -> None:
        self.config = config

    def __repr__(self) -> str:
        vm = self.config.value_model
        return f"ValueModelScorer(sigma={vm.perturbation_sigma}, exploration_bonus={vm.author_exploration_bonus})"

    async def score(self, query: ForYouQuery, candidates: Sequence[PostCandidate]) -> list[Valued]:
        model = ValueModel(self.config, query.viewer_id)
        features = query.features
        engaged = {it.author_id for it in query.history or ()}
        scored = [i for i, c in enumerate(candidates) if c.action_scores is not None]
        out: list[Valued] = [None] * len(candidates)
        if not scored:
            return out
        cs = [candidates[i] for i in scored]
        mutual = np.array([c.author_id in features.mutual_follow_ids and c.in_reply_to_post_id is None
                           and c.repost_of_post_id is None for c in cs])
        unexplored = np.array([c.author_id not in features.followed_user_ids and c.author_id not in engaged for c in cs])
        inputs = (model, np.array([astuple(c.action_scores) for c in cs], np.float64),  # (C, fields)
                  np.array([c.video_duration_ms is not None
                            and c.video_duration_ms > self.config.min_video_duration_ms for c in cs]),
                  np.array([c.has_link for c in cs]), mutual, unexplored)
        names, matrix = term_matrix(*inputs)  # (C, terms): their sum is the score, explained or not
        combined = matrix.sum(1).tolist()
        if not query.explain:
            for k, i in enumerate(scored):
                out[i] = (model.offset(combined[k]), None)
            return out
        # explain: each candidate's dict built from its row of the matrix (built term by term, ~28 terms per
        # candidate, the explain took 33 ms of a feed of 1,664 candidates, measured)
        perturbation = ({f"perturbation.{h}": m for h, m in model.multipliers.items()}
                        if self.config.value_model.perturbation_sigma > 0 else {})
        for k, (i, row) in enumerate(zip(scored, matrix.tolist(), strict=True)):
            out[i] = (model.offset(combined[k]), dict(zip(names, row)) | perturbation)
        return out

    def update(self, candidate: PostCandidate, value: Valued) -> None:
        if value is None:
            candidate.weighted_score = candidate.score = None
            return
        candidate.weighted_score, candidate.score_terms = value
        candidate.score = candidate.weighted_score


def combined_scores(model: ValueModel, x: np.ndarray, long_video: np.ndarray, has_link: np.ndarray,
                    mutual: np.ndarray, unexplored: np.ndarray) -> np.ndarray:
    """``(C,)`` Σ ``ValueModel.terms`` of ``C`` candidates given as arrays: ``x (C, ActionScores fields)`` their
    predictions, and per candidate a video longer than ``min_video_duration_ms``, an outbound link, an original
    by a mutual follow, an unexplored author. The scorer's sum, and the simulator's oracle over true
    probabilities (``scripts/simulate.py``): one formula (:func:`term_matrix`'s rows summed), so both rank with
    the same weights."""
    return term_matrix(model, x, long_video, has_link, mutual, unexplored)[1].sum(1)


def _field_weights(model: ValueModel) -> np.ndarray:
    """The weight of each ``ActionScores`` field: the actions' and dwell_time's; 0 for the durations."""
    return np.array([model.weights.get(f, 0.0) if f in ScoringWeights.__struct_fields__ else 0.0 for f in _FIELDS])


# the terms ValueModel.terms names, in its order: every action, dwell_time, the products, the boosts, the bonus
TERM_NAMES: tuple[str, ...] = (*(a.value for a in ACTIONS), "dwell_time", *PRODUCT_TERMS,
                               "mutual_follow_reply_boost", "mutual_follow_dwell_boost", "author_exploration_bonus")


def term_matrix(model: ValueModel, x: np.ndarray, long_video: np.ndarray, has_link: np.ndarray,
                mutual: np.ndarray, unexplored: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    """``ValueModel.terms`` of ``C`` candidates at once (arguments as :func:`combined_scores`): the term names
    and a ``(C, terms)`` matrix, row ``k`` the terms of candidate ``k`` (``mutual``: an original by a mutual
    follow, as ``combined_scores`` takes it)."""
    vm = model.config.value_model
    cols = [_COL[a.value] for a in ACTIONS] + [_COL["dwell_time"]]
    out = np.empty((len(x), len(TERM_NAMES)), np.float64)
    out[:, : len(cols)] = x[:, cols] * _field_weights(model)[cols]
    out[~long_video, TERM_NAMES.index(Action.VIDEO_QUALITY_VIEW.value)] = 0.0
    out[~has_link, TERM_NAMES.index(Action.LINK_OPEN.value)] = 0.0
    for j, (name, (action, duration)) in enumerate(PRODUCT_TERMS.items(), start=len(cols)):
        out[:, j] = model.weights[name] * x[:, _COL[action.value]] * x[:, _COL[duration]]
    out[:, -3] = np.where(mutual, vm.mutual_follow_reply_boost * x[:, _COL["reply"]], 0.0)
    out[:, -2] = np.where(mutual, vm.mutual_follow_dwell_boost * x[:, _COL["dwell"]], 0.0)
    out[:, -1] = np.where(unexplored, vm.author_exploration_bonus, 0.0)
    return TERM_NAMES, out
