"""Scorers: ranker call, weighted formula and squeeze, author diversity, OON factor, recency fallback."""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.mixer.fakes import MINUTE_MS, NOW_MS, TableRanker, cand, query
from xserve.config import ScoringConfig, ScoringWeights
from xserve.mixer.scorers import (
    AuthorDiversityScorer,
    OONScorer,
    PhoenixScorer,
    RecencyFallbackScorer,
    WeightedScorer,
)
from xserve.mixer.selectors import TopKScoreSelector
from xserve.pipeline import Status
from xserve.schema import ACTIONS, Action, ActionScores, HistoryItem

HISTORY = (HistoryItem(1, 2, frozenset({Action.FAVORITE}), NOW_MS),)


def score(scorer, candidates, q=None):
    """Run through the framework and apply the values, as the pipeline does; returns the report."""
    values, report = asyncio.run(scorer.run(q or query(history=HISTORY), candidates))
    if report.status is Status.OK:
        scorer.update_all(candidates, values)
    return report


# ---------------------------------------------------------------- PhoenixScorer


def test_phoenix_scorer_scores_reposts_as_their_original():
    ranker = TableRanker({5: ActionScores(favorite=0.9), 6: ActionScores(reply=0.1)})
    cands = [cand(100, author_id=1, repost_of_post_id=5, repost_of_user_id=50), cand(6, author_id=2)]
    assert score(PhoenixScorer(ranker), cands).status is Status.OK
    sent = ranker.requests[0].candidates
    assert [(c.post_id, c.author_id) for c in sent] == [(5, 50), (6, 2)]
    assert cands[0].action_scores.favorite == 0.9 and cands[1].action_scores.reply == 0.1


def test_phoenix_scorer_stamps_the_prediction_request_id_and_the_scoring_time():
    """So an engagement can name the prediction it followed (reference prediction_request_id, last_scored_at_ms)."""
    cands = [cand(1), cand(2)]
    assert score(PhoenixScorer(TableRanker()), cands, query(request_id="abc-1", history=HISTORY)).status is Status.OK
    assert [(c.prediction_request_id, c.last_scored_at_ms) for c in cands] == [("abc-1", NOW_MS)] * 2


def test_phoenix_scorer_without_history_or_with_a_failing_ranker_leaves_candidates_unscored():
    cands = [cand(1)]
    report = score(PhoenixScorer(TableRanker()), cands, query(history=()))
    assert report.status is Status.ERROR and "no engagement history" in report.error
    report = score(PhoenixScorer(TableRanker(fail=True)), cands)
    assert report.status is Status.ERROR and "ranker unavailable" in report.error
    assert cands[0].action_scores is None


def test_phoenix_scorer_wrong_length_from_the_ranker_is_a_length_mismatch():
    class Short(TableRanker):
        async def rank(self, req):
            resp = await super().rank(req)
            return type(resp)(scores=resp.scores[:-1])

    cands = [cand(1), cand(2)]
    assert score(PhoenixScorer(Short()), cands).status is Status.LENGTH_MISMATCH
    assert all(c.action_scores is None for c in cands)


# ---------------------------------------------------------------- WeightedScorer

W = WeightedScorer(ScoringConfig())
POS, NEG = 43.054, 367.2  # positive and negative weight sums of the defaults


def weighted(scores: ActionScores, video_ms: int | None = None) -> float:
    c = cand(1, action_scores=scores, video_duration_ms=video_ms)
    score(W, [c])
    return c.weighted_score


def test_weighted_sum_matches_the_defaults():
    assert weighted(ActionScores(favorite=1.0, reply=0.5, share_via_copy_link=0.1)) == pytest.approx(0.5 + 2.5 + 2.0 + 0.001)
    assert weighted(ActionScores(dwell_time=25.0)) == pytest.approx(0.1 + 0.001)
    assert weighted(ActionScores()) == 0.001


def test_video_quality_view_counts_only_for_videos_over_ten_seconds():
    vqv = ActionScores(video_quality_view=1.0)
    assert weighted(vqv, None) == weighted(vqv, 5_000) == weighted(vqv, 10_000) == pytest.approx(0.001)
    assert weighted(vqv, 10_001) == pytest.approx(0.05 + 0.001)


def test_negative_totals_are_squeezed_below_positives_keeping_order():
    a = weighted(ActionScores(report=0.001))  # combined -0.234
    b = weighted(ActionScores(report=0.01))  # combined -2.34
    assert a == pytest.approx((-0.234 + NEG) / (POS + NEG) * 0.001)
    assert 0.001 > a > b > 0
    assert weighted(ActionScores(not_interested=1, block_author=1, mute_author=1, report=1)) == pytest.approx(0.0)


def test_unscored_candidates_stay_unscored():
    c = cand(1)
    score(W, [c])
    assert c.weighted_score is None and c.score is None


def test_all_zero_weights_clamp_at_zero():
    zero = WeightedScorer(ScoringConfig(weights=ScoringWeights(**{f: 0.0 for f in ScoringWeights.__struct_fields__})))
    c = cand(1, action_scores=ActionScores(favorite=1.0))
    score(zero, [c])
    assert c.weighted_score == 0.0


probs = st.lists(st.floats(0, 1), min_size=len(ACTIONS), max_size=len(ACTIONS))


@given(probs, probs)
def test_squeeze_is_monotone_and_keeps_negatives_below_positives(p1, p2):
    s1, s2 = ActionScores.from_sequence(p1), ActionScores.from_sequence(p2)
    c1, c2 = W.combined(s1, 20_000), W.combined(s2, 20_000)
    o1, o2 = W.offset(c1), W.offset(c2)
    if c1 < c2:
        assert o1 <= o2
    if c1 < 0 <= c2:
        assert o1 < o2
    assert o1 >= 0


def reference_combined(w: ScoringWeights, p: ActionScores, video_ms: int | None, min_video_ms: int) -> float:
    """The formula as written in the reference, one term at a time (oracle for the dot product)."""
    total = w.dwell_time * p.dwell_time
    for action in ACTIONS:
        if action is Action.VIDEO_QUALITY_VIEW and not (video_ms is not None and video_ms > min_video_ms):
            continue
        total += getattr(w, action.value) * p.get(action)
    return total


weights = st.lists(st.floats(-300, 300), min_size=19, max_size=19)


@given(weights, probs, st.floats(0, 100), st.sampled_from([None, 0, 10_000, 10_001, 60_000]))
def test_dot_product_equals_the_term_by_term_formula(ws, p, dwell, video_ms):
    w = ScoringWeights(**dict(zip(ScoringWeights.__struct_fields__, ws)))
    scorer = WeightedScorer(ScoringConfig(weights=w))
    s = ActionScores.from_sequence(p, dwell_time=dwell)
    assert scorer.combined(s, video_ms) == pytest.approx(reference_combined(w, s, video_ms, 10_000), abs=1e-9)


# ---------------------------------------------------------------- AuthorDiversityScorer


def test_diversity_multipliers_for_one_author():
    cands = [cand(i, author_id=7, weighted_score=10.0 - i) for i in range(5)]
    score(AuthorDiversityScorer(0.5, 0.25), cands)
    assert [c.diversity_multiplier for c in cands] == [1.0, 0.625, 0.4375, 0.34375, 0.296875]
    assert [c.score for c in cands] == pytest.approx([10, 9 * 0.625, 8 * 0.4375, 7 * 0.34375, 6 * 0.296875])


def test_diversity_ranks_by_weighted_score_over_the_whole_set_none_last():
    cands = [
        cand(1, author_id=7, weighted_score=None),
        cand(2, author_id=7, weighted_score=1.0),
        cand(3, author_id=8, weighted_score=5.0),
        cand(4, author_id=7, weighted_score=3.0),
    ]
    score(AuthorDiversityScorer(0.5, 0.25), cands)
    assert [c.diversity_multiplier for c in cands] == [0.4375, 0.625, 1.0, 1.0]
    assert [c.score for c in cands] == [None, 0.625, 5.0, 3.0]


# ---------------------------------------------------------------- OONScorer


def test_oon_factor_only_for_out_of_network():
    cands = [cand(1, in_network=False, score=2.0), cand(2, in_network=True, score=2.0), cand(3, in_network=None, score=2.0)]
    score(OONScorer(0.75), cands)
    assert [(c.oon_multiplier, c.score) for c in cands] == [(0.75, 1.5), (1.0, 2.0), (1.0, 2.0)]


# ---------------------------------------------------------------- RecencyFallbackScorer and selector


def test_recency_fallback_orders_unranked_newest_first_below_ranked():
    cands = [
        cand(1, created_at_ms=NOW_MS - 120 * MINUTE_MS),
        cand(2, score=0.0),  # the lowest possible ranked score
        cand(3, created_at_ms=NOW_MS - 30 * MINUTE_MS),
        cand(4, created_at_ms=None),
    ]
    score(RecencyFallbackScorer(), cands, query())
    assert [c.score for c in cands] == [-3.0, 0.0, -1.5, -math.inf]
    selected = TopKScoreSelector(3).select(query(), cands)
    assert [c.post_id for c in selected] == [2, 3, 1]


def test_top_k_sorts_nan_and_none_last_stably():
    cands = [cand(1, score=None), cand(2, score=math.nan), cand(3, score=1.0), cand(4, score=-5.0), cand(5, score=1.0)]
    assert [c.post_id for c in TopKScoreSelector(10).select(query(), cands)] == [3, 5, 4, 1, 2]
    assert [c.post_id for c in TopKScoreSelector(2).select(query(), cands)] == [3, 5]


# ---------------------------------------------------------------- NegativeFeedbackScorer (issue 17 item 6)


def _negatives(*signals):
    from xserve.schema import NegativeSignal, UserFeatures

    return query(user_features=UserFeatures(negative_feedback=tuple(NegativeSignal(*s) for s in signals)))


def test_a_not_interested_from_60_days_ago_weighs_less_than_one_from_yesterday():
    from xserve.clock import DAY_MS
    from xserve.config import NegativeFeedbackConfig
    from xserve.mixer.scorers import NegativeFeedbackScorer

    scorer = NegativeFeedbackScorer(NegativeFeedbackConfig())  # half-life 30 days, not_interested 0.5
    q = _negatives((20, Action.NOT_INTERESTED, NOW_MS - 60 * DAY_MS), (21, Action.NOT_INTERESTED, NOW_MS - DAY_MS))
    cands = [cand(1, 20, score=1.0), cand(2, 21, score=1.0), cand(3, 22, score=1.0), cand(4, 21)]
    score(scorer, cands, q)
    old, recent, none, unscored = (c.negative_feedback_multiplier for c in cands)
    assert old == pytest.approx(1 - 0.5 * 0.25)  # two half-lives: a quarter of the weight
    assert recent == pytest.approx(1 - 0.5 * 0.5 ** (1 / 30))
    assert recent < old < none == 1.0  # yesterday's weighs more: its author's post is demoted more
    assert [c.score for c in cands] == pytest.approx([old, recent, 1.0, None])
    assert unscored == recent and cands[3].score is None  # an unscored post stays unscored
    # the half-life is config: at 60 days it is the whole story
    half = NegativeFeedbackScorer(NegativeFeedbackConfig(half_life_ms=60 * DAY_MS)).multipliers(q)
    assert half[20] == pytest.approx(0.75)


def test_negative_feedback_multiplies_per_signal_floors_and_reaches_reposted_authors():
    from xserve.config import NegativeFeedbackConfig
    from xserve.mixer.scorers import NegativeFeedbackScorer

    cfg = NegativeFeedbackConfig(floor=0.2)
    scorer = NegativeFeedbackScorer(cfg)
    q = _negatives((20, Action.NOT_INTERESTED, NOW_MS), (20, Action.REPORT, NOW_MS), (30, Action.MUTE_AUTHOR, NOW_MS))
    cands = [cand(1, 20, score=1.0), cand(2, 40, repost_of_post_id=9, repost_of_user_id=30, score=1.0),
             cand(3, 41, repost_of_post_id=8, repost_of_user_id=42, score=1.0)]
    score(scorer, cands, q)
    assert cands[0].negative_feedback_multiplier == pytest.approx(max(0.2, 0.5 * 0.1))  # two signals, floored
    assert cands[1].negative_feedback_multiplier == pytest.approx(0.25)  # a repost of the muted author
    assert cands[2].negative_feedback_multiplier == 1.0
    with pytest.raises(ValueError, match="half_life_ms"):
        NegativeFeedbackConfig(half_life_ms=0)
