"""PipelineResult -> FeedResponse."""

from __future__ import annotations

import msgspec

from tests.mixer.fakes import cand, query
from xserve.mixer.response import feed_response
from xserve.pipeline import ComponentReport, PipelineResult, Stage, Status
from xserve.schema import ActionScores, FeedResponse


def result(explain: bool) -> PipelineResult:
    kept = cand(1, author_id=5, score=0.5, weighted_score=0.8, diversity_multiplier=0.625, oon_multiplier=1.0,
                action_scores=ActionScores(favorite=0.5), author_screen_name="five",
                repost_of_post_id=9, repost_of_user_id=6, repost_screen_name="six")
    report = ComponentReport(Stage.SOURCE, "ThunderSource", Status.ERROR, 1.5, 0, 0, "RuntimeError: down")
    return PipelineResult(query(explain=explain), [kept, cand(2)], {"AgeFilter": [cand(2)]}, [kept], [report], ["ThunderSource"])


def test_plain_response_has_posts_and_degraded_only():
    resp = feed_response(result(explain=False))
    assert resp.request_id == "test-1" and resp.degraded == ("ThunderSource",)
    [post] = resp.posts
    assert (post.post_id, post.score, post.screen_names, post.explain) == (1, 0.5, {5: "five", 6: "six"}, None)
    assert resp.filtered == () and resp.trace == ()


def test_explain_response_round_trips_as_json():
    resp = feed_response(result(explain=True))
    e = resp.posts[0].explain
    assert (e.weighted_score, e.diversity_multiplier, e.action_scores.favorite) == (0.8, 0.625, 0.5)
    assert [(f.filter, f.post_ids) for f in resp.filtered] == [("AgeFilter", (2,))]
    assert [(t.stage, t.status, t.error) for t in resp.trace] == [("source", "error", "RuntimeError: down")]
    assert msgspec.json.decode(msgspec.json.encode(resp), type=FeedResponse) == resp


def test_a_served_post_carries_the_labels_its_level_allowed():
    """A followed author's nsfw post is served (in-network level) marked, so a client can show a warning."""
    from xserve.schema import VisibilityLabel

    nsfw = cand(3, visibility_labels=(VisibilityLabel.NSFW,))
    res = PipelineResult(query(), [nsfw, cand(4)], {}, [nsfw, cand(4, visibility_labels=())], [], [])
    assert [p.visibility_labels for p in feed_response(res).posts] == [(VisibilityLabel.NSFW,), ()]


def test_a_response_carries_the_prediction_and_in_explain_why_visibility_removed_a_post():
    from xserve.schema import VisibilityLabel

    ranked = cand(1, score=0.5, prediction_request_id="req-1", last_scored_at_ms=123)
    spam = cand(2, visibility_labels=(VisibilityLabel.SPAM,), visibility_reason="spam")
    unchecked = cand(3)  # its labels never came back
    old = cand(4)
    filtered = {"AgeFilter": [old], "VisibilityFilter": [spam, unchecked]}
    for explain in (False, True):
        resp = feed_response(PipelineResult(query(explain=explain), [], filtered, [ranked, cand(5)], [], []))
        assert [(p.prediction_request_id, p.last_scored_at_ms) for p in resp.posts] == [("req-1", 123), (None, None)]
    assert [(f.filter, f.post_ids, f.reasons) for f in resp.filtered] == [
        ("AgeFilter", (4,), ()), ("VisibilityFilter", (2, 3), ("spam", "unchecked")),
    ]
    assert msgspec.json.decode(msgspec.json.encode(resp), type=FeedResponse) == resp
