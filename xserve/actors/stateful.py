"""The stateful actors of one data directory, created (or attached to) here and nowhere else.

Every stateful part is a named actor (:class:`~xserve.actors.naming.ActorNames`,
in :data:`~xserve.actors.naming.NAMESPACE`) created with ``get_if_exists``: the
first caller creates it, every later one (another replica, a restarted one)
gets a handle to the same actor. ``detached`` keeps an actor alive when its
creator goes away (a Serve replica scaled down must not take the store with
it); tests leave it off so the cluster cleans up after them.

``app.py`` passes the names to the deployments (``.bind``) and each replica
attaches through these functions when it starts, rather than ``app.py``
creating the actors while it builds the application: ``serve run xserve.app``
and ``serve build`` import the application before they connect to Ray (a
build there would start a Ray of its own, without the ``--address`` and
runtime environment the command was given), while ``serve deploy`` builds it
inside the cluster. A replica always runs inside the cluster it serves.
``xserve serve`` is connected before it builds anything, so it also creates them
at once (:func:`start_all`): their processes start beside Serve's instead of
after the replicas that attach to them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import ray

from xserve.actors.ads import AdInventoryActor
from xserve.actors.naming import NAMESPACE, PART_KINDS, ActorNames
from xserve.actors.posts import PostCatalogShard
from xserve.actors.retrieval import RetrievalIndexer, RetrievalShard
from xserve.actors.thunder import ThunderIngest, ThunderShard
from xserve.actors.users import UserStoreShard
from xserve.config import ConfigError, RetrievalConfig, ServingConfig, StorageConfig, ThunderConfig, XServeConfig

__all__ = [
    "ActorPlacement",
    "ad_inventory",
    "start_all",
    "RetrievalActors",
    "ThunderActors",
    "post_catalog_shards",
    "retrieval_actors",
    "thunder_actors",
    "user_store_shards",
]


# Ray places an actor that asks for no resource at all on a random node, whatever its strategy
# (ray-project/ray#23315, #27577: the owner's raylet round-robins only requests of some resource), and the
# stateful actors ask for no CPU. Under SPREAD each reserves this much of its node's logical memory, a
# scheduling token (Ray does not enforce it), so that SPREAD does place them on the nodes in turn.
_SPREAD_MEMORY_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class ActorPlacement:
    """Where Ray places the stateful actors (``serving.actor_scheduling`` and ``serving.actor_node_labels``).

    ``scheduling`` is Ray's strategy for all of them ("DEFAULT" or "SPREAD"). ``node_labels`` maps a part
    (``users-0-of-2``) or a kind (its first words: ``users``, ``thunder``, ``thunder-shard``) to the node
    labels its actors prefer; the most specific key wins. A preference is Ray's ``label_selector`` with a
    ``fallback_strategy`` of any node, and Ray weighs both at every placement, a restart's included: an
    actor created before a node with the labels joined runs elsewhere, a restart puts it on that node once
    it is alive, and a restart after that node is lost puts it on a surviving one. The options are
    recorded at the actor's first creation (``get_if_exists``), like its constructor arguments.
    """

    scheduling: str = "DEFAULT"
    node_labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from ray._private.label_utils import validate_label_selector

        for key, labels in self.node_labels.items():
            if key.split("-", 1)[0] not in PART_KINDS:
                raise ConfigError(f"serving.actor_node_labels: {key!r} names no stateful actor; "
                                  f"a key starts with one of {', '.join(PART_KINDS)}")
            problem = "no labels" if not labels else validate_label_selector(dict(labels))
            if problem:
                raise ConfigError(f"serving.actor_node_labels[{key!r}]: {problem}")

    @classmethod
    def of(cls, serving: ServingConfig) -> ActorPlacement:
        return cls(serving.actor_scheduling, serving.actor_node_labels)

    def options(self, part: str) -> dict[str, Any]:
        """Ray's placement options for the actor ``part`` (its name after the data directory's tag)."""
        out: dict[str, Any] = {"scheduling_strategy": self.scheduling}
        if self.scheduling == "SPREAD":
            out["memory"] = _SPREAD_MEMORY_BYTES
        keys = [k for k in self.node_labels if part == k or part.startswith(f"{k}-")]
        if keys:
            out["label_selector"] = dict(self.node_labels[max(keys, key=len)])
            out["fallback_strategy"] = [{"label_selector": {}}]  # soft: any node when none has the labels
        return out


def _get_or_create(
    actor_class: Any, names: ActorNames, name: str, args: tuple[Any, ...], detached: bool,
    placement: ActorPlacement, **options: Any
) -> Any:
    """A handle to the actor named ``name``, created with ``args`` if it does not exist yet, placed by
    ``placement`` (a restart after its node is lost places it again the same way, on a node that is alive)."""
    if detached:
        options["lifetime"] = "detached"
    options |= placement.options(names.part(name))
    # no task events: Ray records each call's states for its dashboard and state API and ships them to the GCS
    # every second; a feed makes a dozen calls to these actors, and Serve turns them off for its own actors too
    options.setdefault("enable_task_events", False)
    return actor_class.options(name=name, namespace=NAMESPACE, get_if_exists=True, **options).remote(*args)


def user_store_shards(config: XServeConfig, names: ActorNames, detached: bool = True) -> list[Any]:
    """The user store's shard actors, in shard order."""
    n, placement = config.serving.num_user_shards, ActorPlacement.of(config.serving)
    return [
        _get_or_create(UserStoreShard, names, names.user_shard(i, n), (config, i, n), detached, placement)
        for i in range(n)
    ]


def post_catalog_shards(config: XServeConfig, names: ActorNames, now_ms: int, detached: bool = True) -> list[Any]:
    """The post catalog's shard actors, in shard order; a new one preloads the posts young at ``now_ms``."""
    n, placement = config.serving.num_hydration_shards, ActorPlacement.of(config.serving)
    return [
        _get_or_create(PostCatalogShard, names, names.post_shard(i, n), (config, i, n, now_ms), detached, placement)
        for i in range(n)
    ]


def ad_inventory(config: XServeConfig, names: ActorNames, detached: bool = True) -> Any:
    """The ads inventory's one actor."""
    return _get_or_create(AdInventoryActor, names, names.ads(), (config,), detached, ActorPlacement.of(config.serving))


@dataclass(frozen=True, slots=True)
class ThunderActors:
    shards: list[list[Any]]  # [shard][replica]
    ingest: Any  # the one writer of Thunder's event log


def thunder_actors(
    config: ThunderConfig, storage: StorageConfig, names: ActorNames, detached: bool = False, num_cpus: float = 0,
    placement: ActorPlacement = ActorPlacement(),
) -> ThunderActors:
    """Thunder's shard replicas (they rebuild from the event log) and its ingest actor; the ingest starts
    consuming Kafka when ``event_source = "kafka"``."""
    opts = {"num_cpus": num_cpus, "max_concurrency": config.max_concurrent_requests + 8}
    shards = [
        [
            _get_or_create(ThunderShard, names, names.thunder_shard(s, r), (config, storage, s, r), detached, placement,
                           **opts)
            for r in range(config.replicas_per_shard)
        ]
        for s in range(config.num_shards)
    ]
    ingest = _get_or_create(ThunderIngest, names, names.thunder_ingest(), (config, storage, names), detached, placement,
                            **opts)
    if config.event_source == "kafka":
        ray.get(ingest.start_kafka.remote())
    return ThunderActors(shards, ingest)


@dataclass(frozen=True, slots=True)
class RetrievalActors:
    shards: list[Any]  # RetrievalShard per shard, in shard order
    indexer: Any  # the one writer of live posts into the shards


def retrieval_actors(
    data_dir: str, config: RetrievalConfig, max_post_age_ms: int, names: ActorNames, detached: bool = False,
    placement: ActorPlacement = ActorPlacement(),
) -> RetrievalActors:
    """The retrieval shard actors, then the indexer that writes into them (it finds them by name)."""
    cfg = msgspec.to_builtins(config)  # small constructor arguments: a restart re-runs the constructor
    shards = [
        _get_or_create(
            RetrievalShard, names, names.retrieval_shard(i), (data_dir, i, cfg, max_post_age_ms), detached, placement,
            max_concurrency=config.shard_max_concurrency, num_cpus=0,
        )
        for i in range(config.num_shards)
    ]
    indexer = _get_or_create(
        RetrievalIndexer, names, names.retrieval_indexer(), (data_dir, cfg, max_post_age_ms, names), detached, placement,
        num_cpus=0,
    )
    return RetrievalActors(shards, indexer)


def start_all(config: XServeConfig, names: ActorNames, now_ms: int) -> list[Any]:
    """Create (or attach to) every stateful actor of the data directory, detached, as the replicas will: the
    user store, the post catalog, Thunder, the ads inventory and retrieval's shards and indexer.

    For a driver already connected to the cluster (``xserve serve``): its actors' processes then start
    beside Serve's controller, proxy and replicas instead of after them. Each replica still attaches
    by name, so a replica that finds one missing (a lost node) creates it as before. Returns their handles.
    """
    placement = ActorPlacement.of(config.serving)
    thunder = thunder_actors(config.thunder, config.storage, names, detached=True, placement=placement)
    retrieval = retrieval_actors(config.storage.data_dir, config.retrieval, config.mixer.max_post_age_ms, names,
                                 detached=True, placement=placement)
    return [*user_store_shards(config, names), *post_catalog_shards(config, names, now_ms),
            *(a for shard in thunder.shards for a in shard), thunder.ingest, ad_inventory(config, names),
            *retrieval.shards, retrieval.indexer]
