"""The For You product: every component of the reference Home Mixer (January 2026) as a small class.

``build_for_you_pipeline(config, clients)`` wires them; services are reached
only through the Protocols in ``clients.py``. ``docs/mixer.md`` maps each
reference component to its class and file, and gives the scoring formula and
the ranker-down fallback.
"""

from xserve.mixer.protocols import (
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
