"""The For You application: ``build_app(config)`` composes every deployment; ``app`` is what Serve runs.

``serve run xserve.app`` (or ``xserve serve`` / ``make run``) serves on
http://127.0.0.1:8000 with the data directory ``$XSERVE_DATA_DIR`` (default
``./xserve-data``). Building the app first prepares the data directory: when
it holds no world it seeds the demo world (``serving.demo_world``) and trains
the small models, with progress bars; when it does, this takes no time.

This is the only module that calls ``.bind()``: it decides which deployments
make up the application and which stateful actors (named after the data
directory, :class:`~xserve.actors.naming.ActorNames`) they share. The replicas
attach to those actors when they start (:mod:`xserve.actors.stateful` says why
not here). Each deployment gets one replica with CPU reservations that fit a
2-CPU machine; replicas, autoscaling and queue limits for production are in
``serve_config.yaml``. The first-run bootstrap is :mod:`xserve.synth.bootstrap`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xserve import clock
from xserve.actors.naming import NAMESPACE, ActorNames
from xserve.config import ConfigError, XServeConfig, config_to_dict, load_config, merge_config
from xserve.synth.bootstrap import prepare_data_dir, say, with_models

if TYPE_CHECKING:  # Ray Serve (and the pandas it imports) loads where the app is built, not with this module
    from ray.serve import Application

__all__ = ["app", "build_app", "ingress_options", "serve_forever", "served_config"]


def build_app(
    config: XServeConfig | None = None, prepare: bool = True, user_config: dict[str, Any] | None = None
) -> Application:
    """The application: ``FeedIngress`` (HTTP) bound to the ``Retrieval`` and ``Ranker`` deployments.

    ``config`` defaults to ``load_config($XSERVE_CONFIG)`` (env overrides apply); ``prepare`` seeds and
    trains when the data directory needs it; ``user_config`` is the ingress's live settings (as in
    ``serve_config.yaml``), applied through ``FeedIngress.reconfigure``.
    """
    from xserve.actors.stateful import ActorPlacement
    from xserve.deployments.ingress import FeedIngress
    from xserve.deployments.ranker import Ranker, ranker_options
    from xserve.deployments.retrieval import Retrieval

    config = config or load_config(os.environ.get("XSERVE_CONFIG"))
    if prepare:
        prepare_data_dir(config)
    config = served_config(config)
    data_dir = config.storage.data_dir
    names = ActorNames.of(data_dir)  # every replica of every deployment shares these actors
    serving = config.serving
    ActorPlacement.of(serving)  # a bad serving.actor_node_labels fails the build, not each replica's start
    retrieval = Retrieval.options(ray_actor_options={"num_cpus": serving.retrieval_num_cpus}).bind(
        data_dir, config_to_dict(config.retrieval), config.mixer.max_post_age_ms, names, detached=True,
        actor_scheduling=serving.actor_scheduling, actor_node_labels=serving.actor_node_labels,
    )
    ranker = Ranker.options(**ranker_options(config)).bind(config)
    options: dict[str, Any] = {"ray_actor_options": {"num_cpus": serving.ingress_num_cpus}, **ingress_options(config)}
    if user_config is not None:
        options["user_config"] = user_config
    return FeedIngress.options(**options).bind(config_to_dict(config), names, retrieval, ranker)


def served_config(config: XServeConfig) -> XServeConfig:
    """``config`` as the app serves it: an absolute data directory (every process finds the same one, whatever
    its working directory) and the directory's trained models."""
    return with_models(merge_config(config, {"storage": {"data_dir": str(Path(config.storage.data_dir).resolve())}}))


def ingress_options(config: XServeConfig) -> dict[str, Any]:
    """Serve's own bounds on the ingress: requests per replica, and a bounded proxy queue answering 503 beyond it.

    The replica admits up to ``max_inflight_*`` per class and refuses the rest
    itself (JSON 503, Retry-After), so ``ingress_max_ongoing_requests`` should
    exceed their sum; Serve's queue only fills when every replica is saturated
    even with refusals, and its 503 also carries Retry-After.
    """
    s = config.serving
    for name in ("max_inflight_feeds", "max_inflight_writes", "ingress_max_ongoing_requests", "ingress_max_queued_requests"):
        if getattr(s, name) < 1:
            raise ConfigError(f"serving.{name} must be >= 1, got {getattr(s, name)}")
    if not s.retry_after_s >= 0:
        raise ConfigError(f"serving.retry_after_s must be >= 0, got {s.retry_after_s}")
    return {
        "max_ongoing_requests": s.ingress_max_ongoing_requests,
        "max_queued_requests": s.ingress_max_queued_requests,
        "backpressure_config": {"status_code": 503, "retry_after_s": s.retry_after_s},
    }


def serve_forever(config: XServeConfig, num_cpus: int | None = None) -> None:
    """``xserve serve``: start a local Ray (``num_cpus``: all when None), serve the app on ``serving.host:port``
    until interrupted. Says the Ray address on stderr, for ``ray status --address`` and ``scripts/chaos.py``."""
    import json
    import warnings

    started = time.perf_counter()
    # read by Serve's controller when its process starts (Ray's processes inherit this one's environment)
    os.environ.setdefault("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", str(config.serving.serve_control_loop_s))
    import ray

    # starting Ray forks after prepare_data_dir used LanceDB here; this process does no LanceDB work meanwhile
    warnings.filterwarnings("ignore", message="lancedb fork support is experimental")
    # address="local": a Ray of its own, never one a `ray start` left on this machine
    # no idle workers: Ray prestarts one per CPU and keeps as many idle (~200 MB each), but every part of the app
    # is an actor with a process of its own, so they would only hold memory (benchmarks/bench_start.py)
    ray.init(address="local", num_cpus=num_cpus, namespace=NAMESPACE, include_dashboard=config.serving.ray_dashboard,
             logging_level="WARNING", configure_logging=False,
             _system_config={"prestart_worker_first_driver": False, "num_workers_soft_limit": 0})
    phases = {"ray_s": time.perf_counter() - started}  # where a start goes (benchmarks/bench_start.py reads them)
    quiet = {"log_level": "WARNING", "enable_access_log": False}  # logs quiet by default; Ray's log files keep the rest
    try:
        from xserve.actors.stateful import start_all

        # the stores' processes start now, beside Serve's controller, proxy and replicas, not after the replicas
        # that attach to them (they find them by name); nothing waits for them here
        served = served_config(config)
        start_all(served, ActorNames.of(served.storage.data_dir), clock.now_ms())
        phases["stores_s"] = time.perf_counter() - started - sum(phases.values())  # created; their processes start
        from ray import serve  # imported while the stores' processes start (with pandas: about 0.7 s of CPU)

        serve.start(http_options={"host": config.serving.host, "port": config.serving.port}, logging_config=quiet)
        phases["serve_start_s"] = time.perf_counter() - started - sum(phases.values())
        serve.run(build_app(config, prepare=False), blocking=False, logging_config=quiet)
        phases["deploy_s"] = time.perf_counter() - started - sum(phases.values())  # every replica constructed
        say(f"started in {sum(phases.values()):.1f} s: {json.dumps({k: round(v, 1) for k, v in phases.items()})}")
        address = ray.get_runtime_context().gcs_address
        say(f"serving on http://{config.serving.host}:{config.serving.port} (Ray at {address}; Ctrl-C stops)")
        while True:
            time.sleep(3600)
    finally:
        ray.shutdown()  # takes Serve and the store actors with it (serve.shutdown alone can take 30 s)


def __getattr__(name: str) -> Any:
    # ``app`` is built on first access, not at import: importing xserve.app has no side effects.
    if name == "app":
        application = build_app()
        globals()["app"] = application
        return application
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
