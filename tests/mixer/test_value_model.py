"""The value model (issue 17 item 1): product terms, the mutual-follow boosts, the author-exploration bonus,
per-user weight perturbation, the link gate, and equality with January's weighted scorer when all are off."""

from __future__ import annotations

import asyncio
import math

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.mixer.fakes import cand, clients, query
from xserve.config import ScoringConfig, ScoringWeights, ValueModelConfig, XServeConfig
from xserve.mixer.for_you import build_for_you_pipeline
from xserve.mixer.response import scored_post
from xserve.mixer.scorers import WeightedScorer
from xserve.mixer.value_model import PRODUCT_TERMS, ValueModel, ValueModelScorer, perturbation_sign
from xserve.schema import ACTIONS, Action, ActionScores, HistoryItem, UserFeatures

VIEWER = 1
HISTORY = (HistoryItem(500, 20, frozenset({Action.FAVORITE}), 1),)  # the viewer engaged with author 20
OFF = ValueModelConfig(watch_time=0.0, profile_visit_time=0.0, click_dwell_time=0.0, mutual_follow_dwell_boost=0.0,
                       mutual_follow_reply_boost=0.0, author_exploration_bonus=0.0, perturbation_sigma=0.0)


def run(scorer, candidates, features=UserFeatures(), viewer=VIEWER, history=HISTORY, explain=True):
    q = query(viewer_id=viewer, history=history, user_features=features, explain=explain)
    scorer.update_all(candidates, asyncio.run(scorer.score(q, candidates)))
    return candidates


probs = st.lists(st.floats(0, 1), min_size=len(ACTIONS), max_size=len(ACTIONS))
seconds = st.floats(0, 600)


@given(probs, seconds, st.tuples(seconds, seconds, seconds), st.sampled_from([None, 5_000, 60_000]), st.booleans())
def test_with_its_additions_off_the_value_model_is_the_january_weighted_scorer(p, dwell, durations, video_ms, link):
    config = ScoringConfig(value_model=OFF, weights=ScoringWeights(link_open=0.0, video_open=0.3))
    scores = ActionScores.from_sequence(p, dwell, durations)
    a, b = cand(1, action_scores=scores, video_duration_ms=video_ms, has_link=link), cand(1)
    b.action_scores, b.video_duration_ms = scores, video_ms
    run(ValueModelScorer(config), [a])
    run(WeightedScorer(config), [b])
    assert a.weighted_score == pytest.approx(b.weighted_score, rel=1e-9, abs=1e-12)


def test_product_terms_multiply_a_probability_by_its_predicted_seconds():
    config = ScoringConfig(value_model=ValueModelConfig(watch_time=0.01, profile_visit_time=0.02, click_dwell_time=0.03))
    s = ActionScores(video_open=0.5, watch_time=40.0, profile_click=0.2, profile_visit_time=10.0, click=0.4,
                     click_dwell_time=25.0)
    [c] = run(ValueModelScorer(config), [cand(1, author_id=20, action_scores=s)])
    assert c.score_terms["watch_time"] == pytest.approx(0.01 * 0.5 * 40.0)
    assert c.score_terms["profile_visit_time"] == pytest.approx(0.02 * 0.2 * 10.0)
    assert c.score_terms["click_dwell_time"] == pytest.approx(0.03 * 0.4 * 25.0)
    combined = sum(c.score_terms.values())
    assert c.weighted_score == pytest.approx(combined + config.negative_scores_offset)
    assert set(PRODUCT_TERMS) <= set(c.score_terms) and {a.value for a in ACTIONS} <= set(c.score_terms)


def test_the_mutual_follow_boosts_apply_to_original_posts_by_authors_who_follow_back():
    vm = msgspec.structs.replace(OFF, mutual_follow_dwell_boost=0.5, mutual_follow_reply_boost=15.0)
    s = ActionScores(dwell=0.6, reply=0.1)
    features = UserFeatures(followed_user_ids=frozenset({7, 8}), mutual_follow_ids=frozenset({7}))
    cands = [cand(1, author_id=7, action_scores=s), cand(2, author_id=8, action_scores=s),
             cand(3, author_id=7, action_scores=s, in_reply_to_post_id=9),
             cand(4, author_id=7, action_scores=s, repost_of_post_id=9, repost_of_user_id=30)]
    run(ValueModelScorer(ScoringConfig(value_model=vm)), cands, features)
    boosts = [(c.score_terms["mutual_follow_dwell_boost"], c.score_terms["mutual_follow_reply_boost"]) for c in cands]
    assert boosts[0] == pytest.approx((0.5 * 0.6, 15.0 * 0.1))
    assert boosts[1:] == [(0.0, 0.0)] * 3  # not mutual; a reply; a repost
    assert cands[0].weighted_score > cands[1].weighted_score


def test_the_exploration_bonus_goes_to_authors_the_viewer_neither_follows_nor_engaged_with():
    vm = msgspec.structs.replace(OFF, author_exploration_bonus=0.25)
    s = ActionScores(favorite=0.2)
    features = UserFeatures(followed_user_ids=frozenset({7}))
    cands = [cand(1, author_id=7, action_scores=s), cand(2, author_id=20, action_scores=s),
             cand(3, author_id=99, action_scores=s)]
    run(ValueModelScorer(ScoringConfig(value_model=vm)), cands, features)
    assert [c.score_terms["author_exploration_bonus"] for c in cands] == [0.0, 0.0, 0.25]
    assert cands[2].weighted_score == pytest.approx(cands[0].weighted_score + 0.25)


def test_link_open_counts_only_on_posts_with_a_link_and_its_default_weight_is_zero():
    s = ActionScores(link_open=0.5)
    cands = [cand(1, action_scores=s, has_link=True), cand(2, action_scores=s)]
    run(ValueModelScorer(ScoringConfig()), cands)
    assert [c.score_terms["link_open"] for c in cands] == [0.0, 0.0]  # weight 0 by default, as the issue asks
    config = ScoringConfig(weights=ScoringWeights(link_open=2.0))
    run(ValueModelScorer(config), cands)
    assert [c.score_terms["link_open"] for c in cands] == [1.0, 0.0]


def test_perturbation_is_exp_plus_or_minus_sigma_per_user_and_head_and_stable():
    sigma = 0.3
    vm = msgspec.structs.replace(OFF, perturbation_sigma=sigma, perturbation_salt="s1")
    config = ScoringConfig(value_model=vm)
    a, again, other = ValueModel(config, 42), ValueModel(config, 42), ValueModel(config, 43)
    assert a.weights == again.weights  # deterministic per user
    for head, m in a.multipliers.items():
        assert m == pytest.approx(math.exp(sigma * perturbation_sign("s1", 42, head)))
        assert m in (pytest.approx(math.exp(sigma)), pytest.approx(math.exp(-sigma)))
    assert a.weights["favorite"] == pytest.approx(ScoringWeights().favorite * a.multipliers["favorite"])
    signs = lambda user, salt: [perturbation_sign(salt, user, h) for h in a.multipliers]  # noqa: E731
    assert signs(42, "s1") != signs(43, "s1") and signs(42, "s1") != signs(42, "s2")  # per user, per salt
    assert {perturbation_sign("s1", u, "favorite") for u in range(64)} == {1.0, -1.0}
    # the squeeze uses the perturbed sums; explain shows each head's multiplier
    assert a.negative_sum == pytest.approx(sum(-w for h, w in a.weights.items() if w < 0 and h in ScoringWeights.__struct_fields__))
    [c] = run(ValueModelScorer(config), [cand(1, action_scores=ActionScores(favorite=0.5))], viewer=42)
    assert c.score_terms["perturbation.favorite"] == a.multipliers["favorite"]
    assert c.score_terms["favorite"] == pytest.approx(0.5 * a.weights["favorite"])
    assert other.weights != a.weights


def test_explain_shows_every_term_and_which_scorer_made_the_score():
    [c] = run(ValueModelScorer(ScoringConfig()), [cand(1, action_scores=ActionScores(favorite=0.5))])
    e = scored_post(c, explain=True).explain
    assert e.scorer == "value_model" and e.terms == c.score_terms
    assert {"watch_time", "profile_visit_time", "click_dwell_time", "mutual_follow_dwell_boost",
            "author_exploration_bonus", "link_open", "video_open"} <= set(e.terms)
    [w] = run(WeightedScorer(ScoringConfig()), [cand(1, action_scores=ActionScores(favorite=0.5))])
    assert scored_post(w, explain=True).explain.scorer == "weighted" and scored_post(w, explain=True).explain.terms == {}


def test_the_config_picks_the_scorer():
    names = {}
    for scorer in ("value_model", "weighted"):
        config = msgspec.convert({"scoring": {"scorer": scorer}}, XServeConfig)
        pipeline = build_for_you_pipeline(config, clients())
        names[scorer] = [type(s).__name__ for s in pipeline.scorers]
    assert "ValueModelScorer" in names["value_model"] and "WeightedScorer" not in names["value_model"]
    assert "WeightedScorer" in names["weighted"] and "ValueModelScorer" not in names["weighted"]
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"scoring": {"scorer": "ranked"}}, XServeConfig)


@given(probs, seconds, st.tuples(seconds, seconds, seconds), st.sampled_from([None, 5_000, 60_000]), st.booleans(),
       st.sampled_from([7, 8, 20, 99]), st.booleans(), st.booleans())
def test_the_vectorised_score_equals_the_sum_of_the_explained_terms(p, dwell, durations, video_ms, link, author,
                                                                     reply, repost):
    """Without explain the scorer sums the terms as one numpy expression: the same number as the terms."""
    vm = ValueModelConfig(author_exploration_bonus=0.3, perturbation_sigma=0.1, perturbation_salt="x",
                          mutual_follow_dwell_boost=0.5)
    config = ScoringConfig(value_model=vm, weights=ScoringWeights(link_open=1.5, video_open=0.2))
    features = UserFeatures(followed_user_ids=frozenset({7, 8}), mutual_follow_ids=frozenset({7}))
    fields = dict(action_scores=ActionScores.from_sequence(p, dwell, durations), video_duration_ms=video_ms,
                  has_link=link, in_reply_to_post_id=9 if reply else None,
                  repost_of_post_id=9 if repost else None, repost_of_user_id=30 if repost else None)
    [fast] = run(ValueModelScorer(config), [cand(1, author_id=author, **fields)], features, viewer=5, explain=False)
    [slow] = run(ValueModelScorer(config), [cand(1, author_id=author, **fields)], features, viewer=5)
    assert fast.score_terms is None
    terms = {k: v for k, v in slow.score_terms.items() if not k.startswith("perturbation.")}
    # the two sums add the same terms in another order: a term-sized rounding error, not a result-sized one
    # (terms of opposite signs can cancel to a result far smaller than themselves)
    tol = 1e-9 * (1.0 + sum(abs(v) for v in terms.values()))
    assert fast.weighted_score == pytest.approx(slow.weighted_score, rel=1e-9, abs=tol)
    assert slow.weighted_score == pytest.approx(ValueModel(config, 5).offset(sum(terms.values())), rel=1e-9, abs=tol)


@given(probs, seconds, st.tuples(seconds, seconds, seconds), st.sampled_from([None, 5_000, 60_000]), st.booleans(),
       st.sampled_from([7, 8, 20, 99]), st.booleans())
def test_the_explained_terms_from_one_matrix_equal_the_terms_one_candidate_at_a_time(p, dwell, durations, video_ms,
                                                                                    link, author, reply):
    """An explain request's terms come from ``term_matrix`` (one numpy expression for every candidate): each
    candidate's dict is ``ValueModel.terms``, the per-candidate reference, with the perturbation multipliers."""
    vm = ValueModelConfig(author_exploration_bonus=0.3, perturbation_sigma=0.1, perturbation_salt="x",
                          mutual_follow_dwell_boost=0.5, mutual_follow_reply_boost=0.7)
    config = ScoringConfig(value_model=vm, weights=ScoringWeights(link_open=1.5, video_open=0.2))
    features = UserFeatures(followed_user_ids=frozenset({7, 8}), mutual_follow_ids=frozenset({7}))
    scores = ActionScores.from_sequence(p, dwell, durations)
    cands = [cand(1, author_id=author, action_scores=scores, video_duration_ms=video_ms, has_link=link,
                  in_reply_to_post_id=9 if reply else None),
             cand(2, author_id=7, action_scores=scores, video_duration_ms=video_ms, has_link=not link), cand(3)]
    run(ValueModelScorer(config), cands, features, viewer=5)
    model = ValueModel(config, 5)
    for c in cands[:2]:
        expected = model.terms(c.action_scores, c, c.author_id in features.mutual_follow_ids,
                               c.author_id not in features.followed_user_ids and c.author_id != 20)
        assert {k: v for k, v in c.score_terms.items() if not k.startswith("perturbation.")} == pytest.approx(expected)
        assert {k: v for k, v in c.score_terms.items() if k.startswith("perturbation.")} == {
            f"perturbation.{h}": m for h, m in model.multipliers.items()}
    assert cands[2].score_terms is None and cands[2].weighted_score is None
