"""``ViewerAffinityRouter``: Serve's request router for the ``Ranker``, sending a viewer back to its context.

A thin shell over :class:`~xserve.phoenix.serving.routing.ViewerAffinity` (the policy, unit-tested
without Ray) on Serve's request-router API (``ray.serve.request_router``): ``ranker_options`` names it
in the deployment's ``RequestRouterConfig``, so every handle to the Ranker (one per ingress replica)
routes through it. There is no router in front of Serve.

The routing key is the ``user_id`` of the ``RankRequest`` a ``rank`` call carries as its first
argument (``RankerHandleClient.rank``); a call without one (``stats``, a health check) goes to the
less loaded replica as Serve's default router would. Loads are Serve's own queue-length cache
(updated on every send and reply; a replica with no fresh entry counts as idle here, and Serve
probes it before sending). Every replica is offered, most preferred first, each as its own rank:
Serve sends to the first one that has room (below ``max_ongoing_requests``), so a full replica
spills to the viewer's next choice instead of queueing the request.
"""

from __future__ import annotations

from typing import Any

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

from xserve.phoenix.serving.routing import ViewerAffinity

__all__ = ["ViewerAffinityRouter", "viewer_of"]


def viewer_of(pending_request: PendingRequest | None) -> int | None:
    """The viewer a routed call is for: its first argument's ``user_id`` (a ``RankRequest``), else None."""
    if pending_request is None or not pending_request.args:
        return None
    viewer: Any = getattr(pending_request.args[0], "user_id", None)
    return viewer if isinstance(viewer, int) else None


class ViewerAffinityRouter(RequestRouter):
    def initialize_state(self, max_imbalance: int = 8) -> None:
        """``request_router_kwargs``: ``max_imbalance`` (``ranker_serving.affinity_max_imbalance``)."""
        self._affinity = ViewerAffinity(max_imbalance)

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        viewer = viewer_of(pending_request)
        if viewer is None or len(candidate_replicas) < 2:
            return [candidate_replicas]
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        cache = self._replica_queue_len_cache
        order = self._affinity.choose(viewer, {rid: cache.get(r.replica_id) for rid, r in by_id.items()})
        if pending_request is not None:
            pending_request.routing_context.should_backoff = True  # every replica was offered: back off before retrying
        return [[by_id[rid]] for rid in order]
