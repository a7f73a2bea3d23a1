"""A Ray cluster on this machine whose autoscaler adds and removes worker nodes: Ray's fake multi-node
provider (``ray.autoscaler._private.fake_multi_node``).

The head is started as ``ray.cluster_utils.Cluster`` starts one (its own port and temp dir), with an
autoscaling config of provider type ``fake_multinode``: the head's monitor process runs Ray's
autoscaler (v1) over that provider, which "launches" a worker node by starting one more raylet on
this machine and "terminates" it by killing that raylet's processes. Ray's own
``ray.cluster_utils.AutoscalingCluster`` does the same through ``ray start`` but first runs
``ray stop --force``, which would stop every Ray on the machine, others' included; hence this.

Node types mirror ``cluster.yaml``: the Ranker asks for a GPU (``serve_config.yaml``); here the head
offers one logical GPU (no device: the replica runs on the CPU) and the ``gpu_ranker`` node type one
each, so every Ranker replica past the first needs a node the autoscaler adds.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

from scripts.chaoslib.app_process import pid_alive
from scripts.clusterlib.nodes import NODE_RESOURCE_PREFIX, descendants
from xserve.actors.naming import NAMESPACE

__all__ = ["RANKER_NODE_TYPE", "FakeAutoscalingCluster", "fake_autoscaling_config"]

RANKER_NODE_TYPE = "gpu_ranker"  # the worker node type, as in cluster.yaml
_OBJECT_STORE_BYTES = 150 * 1024 * 1024  # ray.cluster_utils' default per node: the app moves little through it
_HEAD_RESOURCES = {"CPU": 1, "GPU": 1, f"{NODE_RESOURCE_PREFIX}head": 1}  # the ingress is pinned by the last


def fake_autoscaling_config(gcs_address: str, max_ranker_nodes: int, idle_timeout_s: float) -> dict[str, Any]:
    """The autoscaling config of the fake provider: the head, and up to ``max_ranker_nodes`` ``gpu_ranker``
    nodes (1 CPU, 1 logical GPU), each removed after ``idle_timeout_s`` idle. The keys are those of a
    cluster-launcher file (``cluster.yaml``); the fake provider ignores what would set a machine up."""
    ranker = {"CPU": 1, "GPU": 1, "object_store_memory": _OBJECT_STORE_BYTES}
    return {
        "cluster_name": "xserve-autoscale",
        "max_workers": max_ranker_nodes,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_s / 60,
        "provider": {
            "type": "fake_multinode",
            "gcs_address": gcs_address,  # the provider's nodes join this head (else it assumes port 6379)
            "use_node_id_as_ip": True,  # every node shares this machine's IP
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "available_node_types": {
            "ray.head.default": {"resources": dict(_HEAD_RESOURCES), "node_config": {}, "max_workers": 0},
            RANKER_NODE_TYPE: {"resources": ranker, "node_config": {}, "min_workers": 0,
                               "max_workers": max_ranker_nodes},
        },
        "head_node_type": "ray.head.default",
        "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


class FakeAutoscalingCluster:
    """A head (GCS, autoscaler with the fake provider) in ``work_dir``; the calling process is the driver.

    ``update_interval_s`` is how often the autoscaler looks at the cluster (Ray's tests use 1 s).
    """

    def __init__(self, work_dir: Path, max_ranker_nodes: int, idle_timeout_s: float,
                 update_interval_s: float = 1.0, system_config: dict[str, Any] | None = None) -> None:
        import ray
        from ray.cluster_utils import Cluster

        self.ray = ray
        port = _free_port()
        address = f"{ray.util.get_node_ip_address()}:{port}"
        config_path = work_dir / "autoscaling.json"
        config_path.write_text(json.dumps(fake_autoscaling_config(address, max_ranker_nodes, idle_timeout_s)))
        # the monitor process (autoscaler and provider) inherits these; the provider refuses to run without the first
        os.environ["RAY_FAKE_CLUSTER"] = "1"
        os.environ["AUTOSCALER_UPDATE_INTERVAL_S"] = f"{update_interval_s:g}"
        resources = {k: v for k, v in _HEAD_RESOURCES.items() if k not in ("CPU", "GPU")}
        head: dict[str, Any] = {
            "gcs_server_port": port, "num_cpus": _HEAD_RESOURCES["CPU"], "num_gpus": _HEAD_RESOURCES["GPU"],
            "resources": resources, "include_dashboard": False, "autoscaling_config": str(config_path),
            "temp_dir": str(work_dir / "ray"),
            # the provider's head has this id: the autoscaler matches nodes to its own by id
            # (use_node_id_as_ip); a head of another id looks unknown to it and nothing is launched
            "env_vars": {"RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID},
        }
        if system_config:
            head["_system_config"] = system_config
        self.cluster = Cluster(initialize_head=True, head_node_args=head)
        ray.init(address=self.cluster.address, namespace=NAMESPACE, log_to_driver=False, logging_level="ERROR",
                 configure_logging=False)

    @property
    def address(self) -> str:
        return self.cluster.address

    def workers(self) -> int:
        """Alive worker nodes: those the autoscaler added and Ray has registered."""
        return sum(1 for n in self.ray.nodes() if n["Alive"] and "node:__internal_head__" not in n["Resources"])

    def shutdown(self) -> None:
        """Stop the driver, the head, and any worker node the provider left: they are the monitor's children,
        so their processes are found under the head's before it stops, and killed if still alive after."""
        head = self.cluster.head_node
        roots = [i.process.pid for infos in head.all_processes.values() for i in infos if i.process] if head else []
        left = descendants(roots)
        self.ray.shutdown()
        self.cluster.shutdown()
        for pid in left:
            if pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 30
        while any(pid_alive(p) for p in left) and time.monotonic() < deadline:
            time.sleep(0.1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
