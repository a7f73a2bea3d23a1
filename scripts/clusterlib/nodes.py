"""A Ray cluster of several nodes on this machine (Ray's own ``ray.cluster_utils.Cluster``): start it, say
where each actor runs, and lose a node.

Every node is a raylet with its own object store and worker processes; the
head also runs the GCS. Each node gets a custom resource ``xserve_node_<name>``
(``head``, ``worker1``, ...), so placement can be read by name and a
deployment can be pinned to a node; a worker also gets the node label
``xserve-node: <name>``, which ``serving.actor_node_labels`` can name (a
stateful actor's soft preference for it). Nodes get 1 logical CPU each: the app's
twin reserves no CPUs (``twin.py``), so the count only sizes Ray's idle worker
pools, and the processes share the machine's cores.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.chaoslib.app_process import pid_alive
from xserve.actors.naming import NAMESPACE, ActorNames

__all__ = ["NODE_LABEL", "NODE_RESOURCE_PREFIX", "LocalCluster", "Placement", "descendants", "part_of"]

NODE_RESOURCE_PREFIX = "xserve_node_"  # + the node's name: the custom resource naming each node
NODE_LABEL = "xserve-node"  # a worker's node label, its name as value: what an actor's label_selector names


def part_of(actor_name: str, names: ActorNames) -> str | None:
    """What an actor of the app is, for the placement report: the part after the data directory's tag
    (``users-0-of-2``), ``replica:<Deployment>`` for a Serve replica, ``serve:controller`` and
    ``serve:proxy`` for Serve's own, None for any other actor."""
    if names.owns(actor_name):
        return names.part(actor_name)
    if actor_name.startswith("SERVE_REPLICA::"):  # SERVE_REPLICA::<app>#<deployment>#<id>
        return f"replica:{actor_name.split('#')[1]}"
    if actor_name.startswith("SERVE_CONTROLLER_ACTOR"):
        return "serve:controller"
    if actor_name.startswith("SERVE_PROXY_ACTOR"):  # SERVE_PROXY_ACTOR-<node id>
        return "serve:proxy"
    return None


@dataclass(frozen=True)
class Placement:
    """Where each live actor of the app runs: (node name, part, restarts) per actor."""

    actors: tuple[tuple[str, str, int], ...]  # (node, part, num_restarts), sorted

    def parts_on(self, node: str) -> list[str]:
        return [part for n, part, _ in self.actors if n == node]

    def stateful_per_node(self) -> Counter[str]:
        """The app's stateful actors (not Serve's) per node."""
        return Counter(n for n, part, _ in self.actors if ":" not in part)

    def replicas_per_node(self) -> Counter[str]:
        return Counter(n for n, part, _ in self.actors if part.startswith("replica:"))

    def node_of(self, part: str) -> str | None:
        return next((n for n, p, _ in self.actors if p == part), None)

    def restarts_of(self, part: str) -> int:
        """How often Ray has restarted ``part`` (-1 when it is not alive)."""
        return next((r for _, p, r in self.actors if p == part), -1)


class LocalCluster:
    """A head and ``workers`` worker nodes on this machine; the calling process is the driver.

    ``LocalCluster.join(address)`` is the same over a head another process started (the chaos run's
    app): worker nodes added with ``add_worker`` join it, and ``shutdown`` stops only those.
    """

    def __init__(self, workers: int, system_config: dict[str, Any] | None = None) -> None:
        import ray
        from ray.cluster_utils import Cluster

        self.ray = ray
        # no dashboard (placement comes from the GCS's actor table); fast node-death detection is opt-in
        head = {"num_cpus": 1, "resources": {f"{NODE_RESOURCE_PREFIX}head": 1}, "include_dashboard": False}
        if system_config:
            head["_system_config"] = system_config
        self.cluster = Cluster(initialize_head=True, head_node_args=head)
        self.nodes = {"head": self.cluster.head_node}
        for i in range(1, workers + 1):
            self.add_worker(f"worker{i}")
        self.cluster.wait_for_nodes()
        ray.init(address=self.cluster.address, namespace=NAMESPACE, log_to_driver=False, logging_level="ERROR",
                 configure_logging=False)
        self._driver = True  # this object connected the driver, and disconnects it

    @classmethod
    def join(cls, address: str) -> LocalCluster:
        """No node of its own yet, over the head at ``address``; the caller's driver is connected to it."""
        import ray

        self = cls.__new__(cls)
        self.ray, self.cluster, self.nodes, self._driver = ray, _joined(address), {}, False
        return self

    def add_worker(self, name: str) -> None:
        """A worker node ``name`` (1 CPU, its resource ``xserve_node_<name>``, its label ``xserve-node: <name>``),
        registered when this returns."""
        self.nodes[name] = self.cluster.add_node(num_cpus=1, resources={f"{NODE_RESOURCE_PREFIX}{name}": 1},
                                                 labels={NODE_LABEL: name})

    @property
    def address(self) -> str:
        return self.cluster.address

    def node_names(self, alive_only: bool = True) -> dict[str, str]:
        """Node id (hex) -> node name, from each node's custom resource."""
        out = {}
        for node in self.ray.nodes():
            if alive_only and not node["Alive"]:
                continue
            names = [r[len(NODE_RESOURCE_PREFIX):] for r in node["Resources"] if r.startswith(NODE_RESOURCE_PREFIX)]
            if names:
                out[node["NodeID"]] = names[0]
        return out

    def placement(self, names: ActorNames) -> Placement:
        """Where each alive actor of the app (``names``) and of Serve runs (the GCS's actor table)."""
        from ray._private.state import actors

        nodes = self.node_names(alive_only=False)
        rows = []
        for info in actors().values():
            part = part_of(info["Name"], names)
            if part is not None and info["State"] == "ALIVE":
                rows.append((nodes.get(info["Address"]["NodeID"], "?"), part, int(info["NumRestarts"])))
        return Placement(tuple(sorted(rows)))

    def node_pids(self, name: str) -> list[int]:
        """Every process of node ``name``: its raylet, agents and log monitor, and their descendants (the
        raylet's worker processes: actors and replicas)."""
        node = self.nodes[name]
        roots = [info.process.pid for infos in node.all_processes.values() for info in infos if info.process]
        return sorted(descendants(roots))

    def kill_node(self, name: str) -> int:
        """Lose worker ``name`` at once: SIGKILL every process of it (no drain, no goodbye to the GCS), then
        drop it from ``ray.cluster_utils``' books. Returns how many processes were killed."""
        if name == "head":
            raise ValueError("the head holds the GCS, Serve's controller and the proxy: lose a worker")
        pids = self.node_pids(name)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.cluster.remove_node(self.nodes.pop(name), allow_graceful=False)  # reaps its direct children
        deadline = time.monotonic() + 30
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        return len(pids)

    def node_dead(self, name: str) -> bool:
        """Whether the GCS has marked node ``name`` dead."""
        return name not in self.node_names(alive_only=True).values()

    def shutdown(self) -> None:
        if self._driver:
            self.ray.shutdown()
        self.cluster.shutdown()


def descendants(roots: list[int]) -> set[int]:
    """``roots`` and every process descended from them (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])  # after "pid (comm) ": state ppid ...
            children.setdefault(ppid, []).append(int(entry))
    found, stack = set(), list(roots)
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.add(pid)
            stack.extend(children.get(pid, ()))
    return found


def _joined(address: str) -> Any:
    """A ``ray.cluster_utils.Cluster`` over a head it did not start: ``add_node`` joins worker nodes to it,
    ``shutdown`` removes only those. (Made here: ray is imported only once a cluster is wanted.)"""
    from ray.cluster_utils import Cluster

    class Joined(Cluster):
        def __init__(self) -> None:
            # no exit hooks: they install a SIGTERM handler, which only the main thread may, and chaos makes
            # its faults off it; a node left behind exits once its GCS is gone
            super().__init__(initialize_head=False, shutdown_at_exit=False)
            self.redis_address = address
            # add_node starts a head of a new cluster while head_node is None: this stands for the other
            # process's head, so that every node added joins it
            self.head_node = ForeignHead(address)

        @property
        def gcs_address(self) -> str:
            return address

        def shutdown(self) -> None:
            """Remove the nodes added here; the head and Ray's state in this process are the other's."""
            for node in list(self.worker_nodes):
                self.remove_node(node)

    return Joined()


@dataclass(frozen=True)
class ForeignHead:
    """The head of a cluster another process started: only its address is known here."""

    gcs_address: str
