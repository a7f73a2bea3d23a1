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
