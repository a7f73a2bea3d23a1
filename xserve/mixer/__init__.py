"""The For You product: every component of the reference Home Mixer (January 2026) as a small class.

``build_for_you_pipeline(config, clients)`` wires them; services are reached
only through the Protocols in ``clients.py``. Reference component -> class:

==========================================  ===============================  ==========================
reference (xai-org/x-algorithm home-mixer)  xserve class                     file (xserve/mixer/)
==========================================  ===============================  ==========================
UserActionSeqQueryHydrator                  UserActionSeqQueryHydrator       query_hydrators.py
UserFeaturesQueryHydrator                   UserFeaturesQueryHydrator        query_hydrators.py
PhoenixSource                               PhoenixSource                    sources.py
ThunderSource                               ThunderSource                    sources.py
InNetworkCandidateHydrator                  InNetworkHydrator                hydrators.py
CoreDataCandidateHydrator                   CoreDataHydrator                 hydrators.py
VideoDurationCandidateHydrator              VideoDurationHydrator            hydrators.py
SubscriptionHydrator                        SubscriptionHydrator             hydrators.py
GizmoduckCandidateHydrator                  AuthorInfoHydrator               hydrators.py
DropDuplicatesFilter                        DropDuplicatesFilter             filters.py
CoreDataHydrationFilter                     CoreDataHydrationFilter          filters.py
AgeFilter                                   AgeFilter                        filters.py
SelfTweetFilter                             SelfPostFilter                   filters.py
RetweetDeduplicationFilter                  RepostDeduplicationFilter        filters.py
IneligibleSubscriptionFilter                IneligibleSubscriptionFilter     filters.py
PreviouslySeenPostsFilter                   PreviouslySeenFilter             filters.py (+ bloom.py)
PreviouslyServedPostsFilter                 PreviouslyServedFilter           filters.py
MutedKeywordFilter                          MutedKeywordFilter               filters.py (+ tokenize.py)
AuthorSocialgraphFilter                     AuthorSocialgraphFilter          filters.py
PhoenixScorer                               PhoenixScorer                    scorers.py
WeightedScorer                              WeightedScorer                   scorers.py
AuthorDiversityScorer                       AuthorDiversityScorer            scorers.py
OONScorer                                   OONScorer                        scorers.py
(none: the ranker-down backup)              RecencyFallbackScorer            scorers.py
TopKScoreSelector                           TopKScoreSelector                selectors.py
VFCandidateHydrator (post-selection)        VisibilityHydrator               post_selection.py
VFFilter (post-selection)                   VisibilityFilter                 post_selection.py
DedupConversationFilter (post-selection)    DedupConversationFilter          post_selection.py
CacheRequestInfoSideEffect                  ServedHistorySideEffect          side_effects.py
PhoenixCandidatePipeline                    build_for_you_pipeline           for_you.py
ScoredPostsQuery (internal query)           ForYouQuery                      query.py
ScoredPostsResponse assembly (server.rs)    feed_response                    response.py
==========================================  ===============================  ==========================
"""

from xserve.mixer.clients import (
    ForYouClients,
    InNetworkClient,
    PostDataClient,
    RankerClient,
    RetrievalClient,
    UserDataClient,
)
from xserve.mixer.for_you import ForYouPipeline, build_for_you_pipeline
from xserve.mixer.query import ForYouQuery
from xserve.mixer.response import feed_response

__all__ = [
    "ForYouClients",
    "ForYouPipeline",
    "ForYouQuery",
    "InNetworkClient",
    "PostDataClient",
    "RankerClient",
    "RetrievalClient",
    "UserDataClient",
    "build_for_you_pipeline",
    "feed_response",
]
