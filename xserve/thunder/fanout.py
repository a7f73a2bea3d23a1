"""Pure helpers for the sharded in-network query: plan the fan-out, merge the answers.

The Ray-facing ``ThunderClient`` (``xserve.deployments.clients``) uses these, and so
does the property test that proves a sharded fan-out answers exactly what one
unsharded :class:`~xserve.thunder.store.ThunderStore` answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from xserve.config import ThunderConfig
from xserve.schema import InNetworkRequest, LightPost
from xserve.sharding import shards_for
from xserve.thunder.store import ThunderStore, merge_newest_first

__all__ = ["InProcessThunder", "fan_out_merge", "max_results_for", "shards_to_ask"]


def max_results_for(req: InNetworkRequest, config: ThunderConfig) -> int:
    """The request's ``max_results``, or the config default (videos or posts) when <= 0."""
    if req.max_results > 0:
        return req.max_results
    return config.max_videos_to_return if req.video_only else config.max_posts_to_return


def shards_to_ask(req: InNetworkRequest, config: ThunderConfig) -> list[int]:
    """Sorted shard indices owning at least one of the (truncated) followed authors."""
    return sorted(shards_for(req.followed_ids[: config.max_input_list_size], config.num_shards))


def fan_out_merge(answers: Iterable[list[LightPost]], req: InNetworkRequest, config: ThunderConfig) -> list[LightPost]:
    """Merge per-shard answers newest first and truncate.

    Each shard already keeps its newest ``max_results``; authors never span
    shards, so the global newest ``max_results`` are among them.
    """
    merged = [p for answer in answers for p in answer]
    return merge_newest_first(merged, max_results_for(req, config))


class InProcessThunder:
    """The mixer's ``InNetworkClient`` Protocol over one in-process, unsharded :class:`ThunderStore`.

    For single-process runs and the end-to-end golden test; ``clock_ms`` is
    the time source (passed in, never read from a hidden global).
    """

    def __init__(self, store: ThunderStore, clock_ms: Callable[[], int]) -> None:
        self.store = store
        self.clock_ms = clock_ms

    def __repr__(self) -> str:
        return f"InProcessThunder({self.store!r})"

    async def in_network_posts(self, req: InNetworkRequest) -> list[LightPost]:
        return self.store.in_network_posts(req, self.clock_ms())
