"""``build_for_you_pipeline``: the For You pipeline, every component listed in execution order.

Mirrors the reference ``phoenix_candidate_pipeline.rs`` (January 2026), with the issue-17 additions
(``docs/reference.md`` §11): the popular source, the negative-feedback multiplier, cold start, the
impression counts and the ads stages (``ads.py``), each present when its config section is enabled and the clients it needs are given.

Two wrappers mark what a late or failing request must still do (the
framework's ``runs_past_deadline`` and ``fail_closed``, ``xserve/pipeline``):

* ``_required``: the stages that carry the viewer's or the platform's safety
  choices (blocks and mutes, muted keywords, subscriptions, deleted posts,
  visibility). The request deadline never skips them, and when one fails the
  posts it should have checked are not served.
* ``_past_deadline``: cheap in-process stages (the in-network flag, the
  weighted, diversity, out-of-network and recency scorers), so that a request
  whose ranker ran out of time is still served in recency order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from xserve.ads.blender import AdBlender
from xserve.ads.targeting import AdTargeter
from xserve.config import XServeConfig
from xserve.mixer.protocols import ForYouClients
from xserve.mixer.ads import (
    AdBlenderFilter,
    AdDeliverySideEffect,
    AdSlateQueryHydrator,
    AdSource,
    AdValueScorer,
    AdvertiserFilter,
    TopKWithAdsSelector,
)
from xserve.mixer.cold_start import ColdStartScorer
from xserve.mixer.filters import (
    AgeFilter,
    AuthorSocialgraphFilter,
    CoreDataHydrationFilter,
    DropDuplicatesFilter,
    IneligibleSubscriptionFilter,
    MutedKeywordFilter,
    PreviouslySeenFilter,
    PreviouslyServedFilter,
    RepostDeduplicationFilter,
    SelfPostFilter,
)
from xserve.mixer.hydrators import (
    AuthorInfoHydrator,
    CoreDataHydrator,
    InNetworkHydrator,
    SubscriptionHydrator,
    VideoDurationHydrator,
)
from xserve.mixer.post_selection import DedupConversationFilter, VisibilityFilter, VisibilityHydrator
from xserve.mixer.query import ForYouQuery
from xserve.mixer.query_hydrators import (
    ServedHistoryQueryHydrator,
    UserActionSeqQueryHydrator,
    UserFeaturesQueryHydrator,
)
from xserve.mixer.scorers import (
    AuthorDiversityScorer,
    NegativeFeedbackScorer,
    OONScorer,
    PhoenixScorer,
    RecencyFallbackScorer,
    WeightedScorer,
)
from xserve.mixer.selectors import TopKScoreSelector
from xserve.mixer.side_effects import ImpressionCountSideEffect, ServedHistorySideEffect
from xserve.mixer.sources import PhoenixSource, PopularSource, ThunderSource
from xserve.mixer.value_model import ValueModelScorer
from xserve.mixer.side_effects import ServedHistorySideEffect
from xserve.mixer.sources import PhoenixSource, ThunderSource
from xserve.pipeline import CandidatePipeline, Component, MetricsSink, NullMetricsSink
from xserve.schema import PostCandidate

__all__ = ["ForYouPipeline", "RequestLimit", "build_for_you_pipeline"]

ForYouPipeline = CandidatePipeline[ForYouQuery, PostCandidate]
_C = TypeVar("_C", bound=Component)


def build_for_you_pipeline(
    config: XServeConfig, clients: ForYouClients, metrics: MetricsSink | None = None
) -> ForYouPipeline:
    """The For You pipeline over ``clients``, sized and timed by ``config.mixer``, scored by ``config.scoring``.

    Cheap to call: a deployment rebuilds it when its config is reloaded.
    ``metrics`` receives every component report (default: dropped).
    """
    mixer, scoring = config.mixer, config.scoring
    post_data = clients.post_data
    stats, impressions = clients.post_stats, clients.impressions
    negatives, cold_start = config.negative_feedback, config.cold_start
    ads = clients.ads if config.ads.enabled else None
    blender = AdBlender(config.ads)
    limit = RequestLimit(mixer.result_size)
    return CandidatePipeline(
        query_hydrators=_timed(
            mixer.query_hydrator_timeout_s,
            UserActionSeqQueryHydrator(clients.user_data, mixer.history_length, post_data),
            _required(UserFeaturesQueryHydrator(clients.user_data)),
            ServedHistoryQueryHydrator(clients.user_data),
            *_present(ads and AdSlateQueryHydrator(ads, clients.user_data)),
        ),
        # Phoenix first, as the reference: DropDuplicatesFilter then keeps the Phoenix copy of a post both return.
        # Ads before all: a running ad's creative is shown only as the ad (paid, spaced), never also organically.
        sources=_timed(
            mixer.source_timeout_s,
            *_present(ads and AdSource(AdTargeter(config.ads.max_ads_ranked), blender)),
            PhoenixSource(clients.retrieval, mixer.retrieval_max_results),
            ThunderSource(clients.in_network, mixer.thunder_max_results),
            *_present(stats and config.popular.enabled and PopularSource(stats, config.popular)),
        ),
        hydrators=_timed(
            mixer.hydrator_timeout_s,
            _past_deadline(InNetworkHydrator()),
            _required(CoreDataHydrator(post_data)),
            VideoDurationHydrator(post_data),
            _required(SubscriptionHydrator(post_data)),
            AuthorInfoHydrator(post_data),
        ),
        filters=_timed(
            mixer.filter_timeout_s,
            DropDuplicatesFilter(),
            _required(CoreDataHydrationFilter()),
            AgeFilter(mixer.max_post_age_ms),
            SelfPostFilter(),
            RepostDeduplicationFilter(),
            _required(IneligibleSubscriptionFilter()),
            PreviouslySeenFilter(),
            PreviouslyServedFilter(),
            _required(MutedKeywordFilter()),
            _required(AuthorSocialgraphFilter()),
            *_present(ads and _required(AdvertiserFilter())),
        ),
        scorers=_timed(
            mixer.scorer_timeout_s,
            PhoenixScorer(clients.ranker),
            _past_deadline(ValueModelScorer(scoring) if scoring.scorer == "value_model" else WeightedScorer(scoring)),
            _past_deadline(AuthorDiversityScorer(scoring.author_diversity_decay, scoring.author_diversity_floor)),
            _past_deadline(OONScorer(scoring.oon_weight_factor)),
            *_present(negatives.enabled and _past_deadline(NegativeFeedbackScorer(negatives))),
            *_present(stats and impressions and cold_start.enabled and ColdStartScorer(impressions, stats, cold_start)),
            _past_deadline(RecencyFallbackScorer()),
            *_present(ads and _past_deadline(AdValueScorer())),
        ),
        # runs past the deadline and fails closed, as every selector
        selector=TopKWithAdsSelector(mixer.top_k) if ads else TopKScoreSelector(mixer.top_k),
        post_selection_hydrators=_timed(
            mixer.hydrator_timeout_s,
            _required(VisibilityHydrator(post_data, mixer.in_network_visibility_drop, mixer.out_of_network_visibility_drop)),
        ),
        post_selection_filters=_timed(
            mixer.filter_timeout_s, _required(VisibilityFilter()), DedupConversationFilter(),
            *_present(ads and AdBlenderFilter(blender, limit)),
        ),
        side_effects=_timed(
            mixer.side_effect_timeout_s,
            ServedHistorySideEffect(clients.user_data, config.loop.log_impressions),
            *_present(impressions and ImpressionCountSideEffect(impressions)),
            *_present(ads and AdDeliverySideEffect(ads)),
        ),
        max_pending_side_effects=mixer.max_pending_side_effects,
        result_size=limit,
        request_timeout_s=mixer.request_timeout_s,
        metrics=metrics or NullMetricsSink(),
    )


@dataclass(frozen=True, slots=True)
class RequestLimit:
    """The feed's length: the request's ``limit``, else ``default`` (config ``result_size``).

    The selector has already cut to ``top_k``, so a feed never exceeds ``top_k`` posts.
    """

    default: int

    def __call__(self, query: ForYouQuery) -> int:
        return query.limit if query.limit is not None else self.default


def _timed(timeout_s: float, *components: _C) -> Sequence[_C]:
    for c in components:
        c.timeout_s = timeout_s
    return components


def _present(component: _C | None | bool) -> tuple[_C, ...]:
    """The component when it was built (its clients given, its config section enabled), else nothing: a config
    change rebuilds the pipeline (``FeedIngress.reconfigure``), so turning one off removes it from the trace."""
    return (component,) if component else ()


def _required(component: _C) -> _C:
    """A safety stage: never skipped by the request deadline, and the posts it should check are dropped if it fails."""
    component.runs_past_deadline = True
    component.fail_closed = True
    return component


def _past_deadline(component: _C) -> _C:
    """A cheap in-process stage: it runs even once the request deadline has passed."""
    component.runs_past_deadline = True
    return component
