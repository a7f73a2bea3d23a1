"""Turn a ``PipelineResult`` into the ``FeedResponse`` the API returns."""

from __future__ import annotations

from xserve.mixer.post_selection import VisibilityFilter
from xserve.mixer.query import ForYouQuery
from xserve.pipeline import PipelineResult
from xserve.schema import FeedResponse, FilteredOut, PostCandidate, ScoredPost, ScoreExplanation, StageReport

__all__ = ["UNCHECKED", "feed_response", "scored_post"]

UNCHECKED = "unchecked"  # the visibility reason of a post removed because its labels could not be fetched


def feed_response(result: PipelineResult[ForYouQuery, PostCandidate]) -> FeedResponse:
    """Posts in feed order, and what the feed was built without (failed components, left-out shards);
    with ``explain``, each post's score factors, per-filter removals and the trace."""
    explain = result.query.explain
    posts = tuple(scored_post(c, explain) for c in result.selected)
    degraded = (*result.degraded, *result.query.left_out)
    if not explain:
        return FeedResponse(request_id=result.query.request_id, posts=posts, degraded=degraded)
    return FeedResponse(
        request_id=result.query.request_id,
        posts=posts,
        degraded=degraded,
        filtered=tuple(_filtered_out(name, cs) for name, cs in result.filtered.items()),
        trace=tuple(
            StageReport(r.stage.value, r.component, r.status.value, r.duration_ms, r.count_in, r.count_out, r.error)
            for r in result.reports
        ),
    )


def _filtered_out(name: str, removed: list[PostCandidate]) -> FilteredOut:
    ids = tuple(c.post_id for c in removed)
    if name != VisibilityFilter.__name__:
        return FilteredOut(name, ids)
    # the visibility verdict; none means the labels never came back (the filter fails closed)
    return FilteredOut(name, ids, tuple(c.visibility_reason or UNCHECKED for c in removed))


def scored_post(c: PostCandidate, explain: bool = False) -> ScoredPost:
    names: dict[int, str] = {}
    if c.author_screen_name is not None:
        names[c.author_id] = c.author_screen_name
    if c.repost_of_user_id is not None and c.repost_screen_name is not None:
        names[c.repost_of_user_id] = c.repost_screen_name
    return ScoredPost(
        post_id=c.post_id,
        author_id=c.author_id,
        score=c.score,
        served_type=c.served_type,
        in_network=c.in_network,
        repost_of_post_id=c.repost_of_post_id,
        repost_of_user_id=c.repost_of_user_id,
        in_reply_to_post_id=c.in_reply_to_post_id,
        ancestors=c.ancestors,
        screen_names=names,
        explain=ScoreExplanation(
            action_scores=c.action_scores,
            weighted_score=c.weighted_score,
            diversity_multiplier=c.diversity_multiplier,
            oon_multiplier=c.oon_multiplier,
            source=c.served_type,
            retrieval_score=c.retrieval_score,
            negative_feedback_multiplier=c.negative_feedback_multiplier,
            popular_engaged_users=c.popular_engaged_users,
            cold_start=c.cold_start,
            terms=c.score_terms or {},
            scorer="" if c.weighted_score is None else "value_model" if c.score_terms is not None else "weighted",
            model_version=c.model_version,
            ad_bid_micros=c.ad.bid_micros if c.ad is not None else None,
            ad_value=c.ad_value,
        )
        if explain
        else None,
        visibility_labels=c.visibility_labels or (),
        prediction_request_id=c.prediction_request_id,
        last_scored_at_ms=c.last_scored_at_ms,
        source=c.source,
        model_version=c.model_version,
        ad_id=c.ad.ad_id if c.ad is not None else None,
    )
