"""The chaos process's connection to the app's Ray cluster: find actors by name, kill them, call them.

The app's stateful actors are found by the names ``xserve.actors.naming`` gives
them; Serve's replicas by the names Serve gives them
(``SERVE_REPLICA::<app>#<deployment>#<id>``).
"""

from __future__ import annotations

import logging
from typing import Any

from xserve.actors.naming import NAMESPACE, ActorNames

__all__ = ["Cluster"]


class Cluster:
    """A Ray driver connected to the app's cluster (``address``), whose actors are named by ``names``."""

    def __init__(self, address: str, names: ActorNames) -> None:
        import ray

        self.ray = ray
        self.names = names
        # quiet: Ray's driver warns about signal handlers off the main thread, Serve's handle router logs at
        # INFO (both reset their levels, so they are switched off rather than raised)
        for name in ("ray._private.worker", "ray.serve"):
            logging.getLogger(name).disabled = True
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level="ERROR",
                 configure_logging=False)

    def close(self) -> None:
        self.ray.shutdown()

    def actor(self, name: str) -> Any:
        """The handle of the app's actor ``name`` (one of ``names``); RuntimeError naming the app's actors if none."""
        try:
            return self.ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            mine = sorted(a["name"] for a in self.ray.util.list_named_actors(all_namespaces=True)
                          if self.names.owns(a["name"]))
            raise RuntimeError(f"no actor {name!r}; the app's actors: {', '.join(mine) or 'none'}") from None

    def kill(self, handle: Any) -> None:
        self.ray.kill(handle, no_restart=False)  # restart allowed: Ray re-runs the constructor (Serve replaces a replica)

    def call(self, method: Any, *args: Any, timeout_s: float = 5.0) -> Any:
        return self.ray.get(method.remote(*args), timeout=timeout_s)

    def answers(self, handle: Any) -> bool:
        """Whether the actor answers ``stats`` within 2 s."""
        try:
            self.call(handle.stats, timeout_s=2)
            return True
        except Exception:  # noqa: BLE001 - restarting
            return False

    def replicas(self, deployment: str) -> list[tuple[str, str]]:
        """(name, namespace) of every running Serve replica of ``deployment``, sorted."""
        return sorted((a["name"], a["namespace"]) for a in self.ray.util.list_named_actors(all_namespaces=True)
                      if a["name"].startswith("SERVE_REPLICA::") and f"#{deployment}#" in a["name"])

    def replica(self, name: str, namespace: str) -> Any:
        return self.ray.get_actor(name, namespace=namespace)

    def call_deployment(self, deployment: str, method: str, *args: Any, timeout_s: float = 30.0) -> Any:
        """``method(*args)`` on a replica of the app's ``deployment``, through a Serve handle."""
        from ray import serve

        handle = serve.get_deployment_handle(deployment, app_name="default")
        return getattr(handle, method).remote(*args).result(timeout_s=timeout_s)

    def deployment_answers(self, deployment: str) -> bool:
        """Whether ``deployment`` answers ``stats`` within 5 s."""
        try:
            self.call_deployment(deployment, "stats", timeout_s=5)
            return True
        except Exception:  # noqa: BLE001 - not answering yet is the expected state here
            return False
