"""One class per fault: how to hit one part of the app, tell that it answers again, and read its state directly.

``FAULTS`` maps the names ``--faults`` takes to the classes, in the order a run
takes them by default.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, ClassVar

from scripts.chaoslib.parts import Parts
from scripts.chaoslib.state import (
    compare_feeds,
    same_catalog,
    same_posts,
    same_scores,
    same_users,
    writes_in_thunder,
)
from scripts.chaoslib.writes import Ledger
from scripts.clusterlib.nodes import NODE_LABEL, LocalCluster, part_of
from xserve import clock
from xserve.schema import RankRequest, RetrievalRequest
from xserve.sharding import shard_for

__all__ = ["FAULTS", "ActorFault", "Fault", "FullRestart", "IngressReplica", "NodeLoss", "PostCatalog",
           "RankerReplica", "RetrievalReplica", "RetrievalShard", "ServeReplica", "ThunderIngest", "ThunderShard",
           "UserStore"]


class Fault:
    """One fault on ``parts``, aimed where it hits the probe viewers (``probes``).

    ``inject`` hits the part and says what it hit; ``answers`` tells whether that part answers again;
    ``state`` reads the part's own state directly (given the baseline's clock and the writers' new posts)
    and ``same_state`` compares two such reads. ``writes`` is the load's ledger of acknowledged writes
    (every fault's check reads those back over HTTP; a fault may also look for them in its part).
    """

    name: ClassVar[str]  # what ``--faults`` calls it
    components: ClassVar[frozenset[str]] = frozenset()  # what a feed's ``degraded`` names while it lasts (empty: anything)
    holds_requests: ClassVar[bool] = False  # the killed part holds the HTTP requests: those in flight die with it

    def __init__(self, parts: Parts, probes: Sequence[int], writes: Ledger | None = None) -> None:
        self.parts, self.probes = parts, probes
        self.writes = writes if writes is not None else Ledger(parts.config.mixer.history_length)
        self.app_down_until: float | None = None  # when the app answered again, if the fault took it down
        self.killed_at: float | None = None  # monotonic time the kill was sent (inject takes a while before it)

    @classmethod
    def app_env(cls) -> dict[str, str]:
        """Settings the run's app must start with for this fault (``XSERVE__*`` variables); none by default."""
        return {}

    def inject(self) -> str:
        raise NotImplementedError

    def answers(self) -> bool:
        raise NotImplementedError

    def state(self, now_ms: int, new: set[int]) -> Any:
        return None

    def same_state(self, before: Any, after: Any, cutoff_ms: int) -> str | None:
        """None when ``after`` matches ``before`` (posts created before ``cutoff_ms`` left out), else the difference."""
        return None


class ActorFault(Fault):
    """``ray.kill(actor, no_restart=False)`` of one of the app's named actors: Ray restarts it and it rebuilds
    from the data directory."""

    def __init__(self, parts: Parts, probes: Sequence[int], writes: Ledger | None = None) -> None:
        super().__init__(parts, probes, writes)
        self.actor_name = self.target()
        self._handle: Any = None

    def target(self) -> str:
        """The name of the actor to kill."""
        raise NotImplementedError

    @property
    def handle(self) -> Any:
        if self._handle is None:
            self._handle = self.parts.cluster().actor(self.actor_name)
        return self._handle

    def inject(self) -> str:
        self.parts.cluster().kill(self.handle)
        self.killed_at = time.monotonic()
        return self.actor_name

    def answers(self) -> bool:
        try:
            handle = self.handle
        except RuntimeError:  # not found: being restarted
            return False
        return self.parts.cluster().answers(handle)


class ThunderShard(ActorFault):
    """Kill replica 0 of the Thunder shard holding most of the probes' followed authors (so it hits their feeds)."""

    name = "thunder_shard"
    components = frozenset({"ThunderSource"})

    def target(self) -> str:
        n = self.parts.config.thunder.num_shards
        owners = Counter(shard_for(a, n) for v in self.probes for a in self.parts.follows(v))
        shard = owners.most_common(1)[0][0] if owners else 0
        # the feed names a left-out Thunder shard `thunder_shard_<i>`, and the source when all of it failed
        self.components = frozenset({"ThunderSource", f"thunder_shard_{shard}"})
        return self.parts.names.thunder_shard(shard, 0)

    def state(self, now_ms: int, new: set[int]) -> list[tuple[int, int]]:
        return self.parts.thunder_posts(self.handle, self.probes, now_ms)

    def same_state(self, before: Any, after: Any, cutoff_ms: int) -> str | None:
        return same_posts(before, after, cutoff_ms)


class RetrievalShard(ActorFault):
    """Kill retrieval shard 0."""

    name = "retrieval_shard"
    components = frozenset({"PhoenixSource"})

    def target(self) -> str:
        return self.parts.names.retrieval_shard(0)

    def state(self, now_ms: int, new: set[int]) -> list[tuple[int, int]]:
        return self.parts.retrieval_top(self.handle, now_ms, new)

    def same_state(self, before: Any, after: Any, cutoff_ms: int) -> str | None:
        return same_posts(before, after, cutoff_ms)


class UserStore(ActorFault):
    """Kill the user-store shard owning the first probe viewer."""

    name = "user_store"
    components = frozenset({"user_store_stale", "AuthorInfoHydrator"})

    def target(self) -> str:
        n = self.parts.config.serving.num_user_shards
        return self.parts.names.user_shard(shard_for(self.probes[0], n), n)

    def state(self, now_ms: int, new: set[int]) -> dict[int, tuple[Any, Any]]:
        return self.parts.user_state(self.probes)

    def same_state(self, before: Any, after: Any, cutoff_ms: int) -> str | None:
        return same_users(before, after, cutoff_ms)


class ThunderIngest(ActorFault):
    """Kill Thunder's ingest actor, the one writer of Thunder's log. Post writes meanwhile are durable in the
    catalog (their Thunder catch-up fails or waits, the write is still acknowledged); the restarted actor reads
    them from its watermark. Its state: Thunder holds every acknowledged post of the writers and no deleted one."""

    name = "thunder_ingest"
    components = frozenset({"ThunderSource"})

    def target(self) -> str:
        return self.parts.names.thunder_ingest()

    def state(self, now_ms: int, new: set[int]) -> tuple[set[int], set[int], set[int]]:
        w = self.writes
        authors = sorted({author for author, _ in w.posts.values()})
        # now, not the baseline's clock: the writers' posts of the fault window are younger than the baseline
        found = {p.post_id for p in self.parts.thunder_all(self.probes[0], authors, clock.now_ms())} if authors else set()
        return found, set(w.posts) - w.deleted - w.unsure_posts, set(w.deleted)

    def same_state(self, before: Any, after: Any, cutoff_ms: int) -> str | None:
        return writes_in_thunder(*after)


class PostCatalog(ActorFault):
    """Kill post-catalog shard 0: the feed's post hydrators fail or time out meanwhile, and as no candidate can
    be checked the feed is empty (the safety stages fail closed); post writes, deletes and engagements wait
    for its restart. Its state: its records of the probes' in-network posts it owns."""

    name = "post_catalog"
    components = frozenset({"CoreDataHydrator", "VideoDurationHydrator", "SubscriptionHydrator", "AuthorInfoHydrator",
                            "VisibilityHydrator"})

    def __init__(self, parts: Parts, probes: Sequence[int], writes: Ledger | None = None) -> None:
        super().__init__(parts, probes, writes)
        self._post_ids: list[int] | None = None  # read at the baseline, the same ids after

    def target(self) -> str:
        return self.parts.names.post_shard(0, self.parts.config.serving.num_hydration_shards)

    def state(self, now_ms: int, new: set[int]) -> dict[int, Any]:
        if self._post_ids is None:
            n = self.parts.config.serving.num_hydration_shards
            ids = {p.post_id for v in self.probes for p in self.parts.thunder_all(v, self.parts.follows(v), now_ms)}
            self._post_ids = sorted(p for p in ids if shard_for(p, n) == 0)
        return self.parts.catalog_posts(self.handle, self._post_ids)

    def same_state(self, before: Any, after: Any, cutoff_ms: int) -> str | None:
        return same_catalog(before, after, cutoff_ms)


class ServeReplica(Fault):
    """Kill the first Serve replica of ``deployment`` (found by Serve's replica names); Serve replaces it."""

    deployment: ClassVar[str]  # the Serve deployment's name

    def __init__(self, parts: Parts, probes: Sequence[int], writes: Ledger | None = None) -> None:
        super().__init__(parts, probes, writes)
        self._before: list[tuple[str, str]] = []  # the replicas running when it was injected

    def inject(self) -> str:
        c = self.parts.cluster()
        self._before = c.replicas(self.deployment)
        if not self._before:
            raise RuntimeError(f"no {self.deployment} replica is running")
        name, namespace = self._before[0]
        c.kill(c.replica(name, namespace))
        self.killed_at = time.monotonic()
        return name

    def answers(self) -> bool:
        c = self.parts.cluster()
        now = c.replicas(self.deployment)
        return bool(now) and now != self._before and c.deployment_answers(self.deployment)


class RankerReplica(ServeReplica):
    """Kill the Ranker's replica: the feed falls back to recency order meanwhile. Its state: the scores the
    Ranker gives the probes' own requests (history and in-network candidates, fixed at the baseline), every
    action of every candidate, and its model version; the app runs one Ranker replica, so the read after
    recovery is the new replica's."""

    name = "ranker_replica"
    deployment = "Ranker"
    components = frozenset({"PhoenixScorer"})

    def __init__(self, parts: Parts, probes: Sequence[int], writes: Ledger | None = None) -> None:
        super().__init__(parts, probes, writes)
        self._requests: list[RankRequest] | None = None

    def state(self, now_ms: int, new: set[int]) -> list[Any]:
        if self._requests is None:
            self._requests = self.parts.rank_requests(self.probes, now_ms)
        return self.parts.rank(self._requests)

    def same_state(self, before: Any, after: Any, cutoff_ms: int) -> str | None:
        return same_scores(before, after)


class RetrievalReplica(ServeReplica):
    """Kill the Retrieval deployment's replica (user tower and fan-out; the shards are actors of their own):
    out-of-network candidates are missing meanwhile, post writes still succeed (their retrieval catch-up
    happens later). Its state: its answers for the probes' requests, fixed at the baseline, the writers'
    posts excluded."""

    name = "retrieval_replica"
    deployment = "Retrieval"
    components = frozenset({"PhoenixSource"})

    def __init__(self, parts: Parts, probes: Sequence[int], writes: Ledger | None = None) -> None:
        super().__init__(parts, probes, writes)
        self._requests: list[RetrievalRequest] | None = None

    def state(self, now_ms: int, new: set[int]) -> list[list[tuple[int, float]]]:
        if self._requests is None:
            self._requests = self.parts.retrieval_requests(self.probes, now_ms)
        return [[(p.post_id, p.score) for p in hits] for hits in self.parts.retrieve(self._requests, new)]

    def same_state(self, before: Any, after: Any, cutoff_ms: int) -> str | None:
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            if (why := compare_feeds(b, a, limit=self._requests[i].max_results)) is not None:
                return f"retrieval for probe {self.probes[i]}: {why}"
        return None


class IngressReplica(ServeReplica):
    """Kill the FeedIngress replica (the HTTP edge): the requests in flight in it die with it (the proxy
    answers them 500; with one replica nothing can answer them), the proxy holds new ones until Serve's
    replacement answers. It holds no state of its own (the last known viewers are a cache, rebuilt as
    viewers come)."""

    name = "ingress_replica"
    deployment = "FeedIngress"
    holds_requests = True


class FullRestart(Fault):
    """kill -9 of every process of the app (``xserve serve`` and the whole Ray cluster under it), then the app
    starts again over the same data directory."""

    name = "full_restart"

    def inject(self) -> str:
        self.parts.disconnect()  # before the cluster dies under this driver
        n = self.parts.app.kill9()
        started = time.monotonic()
        self.parts.app.start()
        self.app_down_until = time.monotonic()
        return f"{n} processes (kill -9), restarted in {self.app_down_until - started:.1f} s"

    def answers(self) -> bool:
        return self.parts.app.healthy()

    def state(self, now_ms: int, new: set[int]) -> dict[int, tuple[Any, Any]]:
        return self.parts.user_state(self.probes)

    def same_state(self, before: Any, after: Any, cutoff_ms: int) -> str | None:
        return same_users(before, after, cutoff_ms)


class NodeLoss(Fault):
    """Lose a worker node at once, with the user-store shard of the first probe viewer on it.

    The run's app starts with ``app_env``: every user-store shard prefers the node labelled
    ``xserve-node: worker1`` (``serving.actor_node_labels``, Ray's ``label_selector`` with a fallback to any
    node), so it starts on the head, where no such node is yet. Before the baseline that worker node joins
    the app's Ray cluster (``scripts/clusterlib/nodes.py``: the cluster check's own node start and kill)
    and the shard is restarted once: Ray places the restart on the labelled node. The fault SIGKILLs
    every process of the node (raylet, agents, workers). Until the GCS declares the node dead (5 missed
    health checks of 3 s) calls to the shard fail at once: the feed gives the viewer's last known data,
    writes to the shard wait for it (``serving.store_unavailable_wait_s``, within chaos's default
    ``--timeout``); then Ray restarts the shard on a surviving node (the fallback: the head) and it
    rebuilds from the data directory. Its state: the probes' features and history, as ``user_store``'s.
    """

    name = "node_loss"
    components = frozenset({"user_store_stale", "AuthorInfoHydrator"})
    worker = "worker1"  # the joined node's name (its resource ``xserve_node_worker1``, its label ``xserve-node``)

    @classmethod
    def app_env(cls) -> dict[str, str]:
        """What the app must start with for this fault: the user-store shards prefer the node to be lost."""
        return {"XSERVE__SERVING__ACTOR_NODE_LABELS": json.dumps({"users": {NODE_LABEL: cls.worker}})}

    def __init__(self, parts: Parts, probes: Sequence[int], writes: Ledger | None = None) -> None:
        super().__init__(parts, probes, writes)
        n = parts.config.serving.num_user_shards
        self.actor_name = parts.names.user_shard(shard_for(probes[0], n), n)
        self.part = part_of(self.actor_name, parts.names)
        c = parts.cluster()
        assert parts.app.ray_address is not None
        self.nodes = LocalCluster.join(parts.app.ray_address)
        self.nodes.add_worker(self.worker)
        restarts = self.nodes.placement(parts.names).restarts_of(self.part)
        c.kill(c.actor(self.actor_name))  # its restart is placed afresh: on the labelled node, now alive
        deadline = time.monotonic() + 120
        # the old actor answers until the kill lands: wait for the restart, then for it to answer
        while time.monotonic() < deadline and not (
                self.nodes.placement(parts.names).restarts_of(self.part) > restarts and self.answers()):
            time.sleep(0.2)
        node = self.nodes.placement(parts.names).node_of(self.part)
        if node != self.worker:
            self.nodes.shutdown()
            raise RuntimeError(f"node_loss: {self.actor_name} restarted on {node or 'no node'} ('?': the app's "
                               f"head), not on {self.worker} (does the app run with NodeLoss.app_env()?)")

    def inject(self) -> str:
        self.killed_at = time.monotonic()
        n = self.nodes.kill_node(self.worker)
        return f"{self.worker} ({n} processes, with {self.part})"

    def answers(self) -> bool:
        """The node is declared dead (or never was lost) and the shard answers."""
        if self.killed_at is not None and not self.nodes.node_dead(self.worker):
            return False
        c = self.parts.cluster()
        try:
            handle = c.actor(self.actor_name)
        except RuntimeError:  # not found: being restarted
            return False
        return c.answers(handle)

    def state(self, now_ms: int, new: set[int]) -> dict[int, tuple[Any, Any]]:
        return self.parts.user_state(self.probes)

    def same_state(self, before: Any, after: Any, cutoff_ms: int) -> str | None:
        return same_users(before, after, cutoff_ms)


# user_store before ingress_replica: a new ingress knows no viewer, and a never-served viewer gets 503 while its
# user-store shard restarts; full_restart last
FAULTS: dict[str, type[Fault]] = {f.name: f for f in (
    ThunderShard, ThunderIngest, RetrievalShard, RetrievalReplica, RankerReplica, PostCatalog, UserStore,
    IngressReplica, NodeLoss, FullRestart)}
