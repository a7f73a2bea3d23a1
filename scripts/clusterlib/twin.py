"""The test-sized twin of ``serve_config.yaml``, and deploying it as ``serve deploy`` does.

The twin is the production file with only what a small machine and a
local multi-node cluster need changed:

* the data directory: the shared one of the check (``XSERVE_DATA_DIR``), plus the caller's
  ``XSERVE__*`` settings (a tiny world's sizes, stage timeouts), and the proxy's request timeout scaled
  as those stage timeouts are (a loaded machine);
* no CPU or GPU reservations (the Ranker runs on CPU), one replica of each deployment;
* one HTTP proxy, on the head (``HeadOnly``): the nodes share one host, so per-node proxies would
  compete for one port;
* the ingress pinned to the head with its node resource: the HTTP edge (proxy and ingress) lives
  with the GCS and Serve's controller, and worker nodes hold what sits behind it. A request in
  flight on an ingress replica whose node is lost fails with it (Serve does not resend it), so the
  node-loss check loses a node behind the edge, as a cluster with several ingress replicas behind a
  retrying load balancer would.

Everything else (deployment options, backpressure, ``user_config``, the app's import path and the
stateful actors' ``actor_scheduling``) is the file's own.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx
import yaml

from scripts.clusterlib.nodes import NODE_RESOURCE_PREFIX

__all__ = ["EDGE_NODE", "FRESH_WORLD_ENV", "app_config", "autoscaling_twin", "deploy", "deploy_failure", "healthy",
           "stage_timeouts", "twin_serve_config"]

EDGE_NODE = "head"  # where the proxy and the ingress run
# a fresh data directory: the tiny demo world and a first model in seconds (a check needs a model, not a good one)
FRESH_WORLD_ENV = {"XSERVE__SERVING__DEMO_WORLD": "tiny", "XSERVE__SERVING__BOOTSTRAP_TRAIN_EXAMPLES": "500",
                   "XSERVE__TRAIN__EPOCHS": "1"}


def twin_serve_config(
    serve_config: Path, data_dir: str, env_vars: dict[str, str], port: int, timeout_scale: float = 1.0
) -> dict[str, Any]:
    """``serve_config`` (a Serve config file with one application) sized for this machine (module docstring);
    ``timeout_scale`` multiplies the proxy's request timeout, as the caller's ``env_vars`` may the app's."""
    doc = copy.deepcopy(yaml.safe_load(serve_config.read_text()))
    doc["proxy_location"] = "HeadOnly"
    http = {**doc.get("http_options", {}), "host": "127.0.0.1", "port": port}
    if http.get("request_timeout_s"):
        http["request_timeout_s"] *= timeout_scale
    doc["http_options"] = http
    (app,) = doc["applications"]
    runtime_env = app.setdefault("runtime_env", {})
    runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **env_vars, "XSERVE_DATA_DIR": data_dir}
    for deployment in app["deployments"]:
        if "autoscaling_config" in deployment:
            deployment["autoscaling_config"] = {**deployment["autoscaling_config"], "min_replicas": 1, "max_replicas": 1}
        options = {**deployment.get("ray_actor_options", {}), "num_cpus": 0, "num_gpus": 0}
        if deployment["name"] == "FeedIngress":
            options["resources"] = {f"{NODE_RESOURCE_PREFIX}{EDGE_NODE}": 0.001}
        deployment["ray_actor_options"] = options
    return doc


def app_config(doc: dict[str, Any]) -> Any:
    """The ``XServeConfig`` the application of ``doc`` (a twin) runs with: its runtime_env's variables (the
    file's, such as its shard counts, then the caller's) over the defaults. A fresh data directory is prepared
    with it: the retrieval index is built for a shard count, and the app's must be the one it was built for."""
    from xserve.config import load_config

    (app,) = doc["applications"]
    return load_config(None, environ=app.get("runtime_env", {}).get("env_vars", {}))


def autoscaling_twin(
    twin: dict[str, Any], serve_config: Path, max_replicas: dict[str, int], delays: dict[str, float] | None = None
) -> dict[str, Any]:
    """``twin`` (``twin_serve_config`` of ``serve_config``) with the deployments of ``max_replicas`` scaling
    again: their ``autoscaling_config`` the file's, but ``max_replicas`` (what one machine holds) and the
    Serve settings of ``delays`` (``upscale_delay_s``, ``downscale_delay_s``, ``look_back_period_s``,
    ``metrics_interval_s``: a check that ends in minutes); the Ranker asks for the file's GPUs again (the
    autoscaling cluster offers logical ones, ``autoscaler.py``), so its replicas past the head's need a node."""
    doc = copy.deepcopy(twin)
    (source,) = yaml.safe_load(serve_config.read_text())["applications"]
    original = {d["name"]: d for d in source["deployments"]}
    for deployment in doc["applications"][0]["deployments"]:
        name = deployment["name"]
        if name not in max_replicas:
            continue
        if "autoscaling_config" not in original[name]:
            raise ValueError(f"{serve_config} gives {name} no autoscaling_config: it cannot scale")
        deployment["autoscaling_config"] = {
            **original[name]["autoscaling_config"], **(delays or {}), "max_replicas": max_replicas[name]}
        gpus = original[name].get("ray_actor_options", {}).get("num_gpus", 0)
        deployment["ray_actor_options"] = {**deployment["ray_actor_options"], "num_gpus": gpus}
    return doc


def deploy(doc: dict[str, Any]) -> None:
    """Start Serve with the file's proxy and HTTP options and submit its applications, as ``serve deploy``
    does (the controller imports and builds the app inside the cluster, with its runtime_env). Returns
    once submitted; the caller waits for ``/healthz``."""
    from ray.serve._private.api import serve_start  # what the dashboard's `serve deploy` handler calls
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(doc)
    client = serve_start(
        http_options=schema.http_options.model_dump(), proxy_location=schema.proxy_location,
        global_logging_config={"log_level": "WARNING", "enable_access_log": False},
    )
    client.deploy_apps(schema)


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=10).status_code == 200
    except httpx.HTTPError:
        return False


def deploy_failure() -> str | None:
    """Serve's reason when the application failed to deploy (a replica's constructor raised), else None."""
    from ray import serve

    for name, app in serve.status().applications.items():
        if app.status == "DEPLOY_FAILED":
            last = [line for line in app.message.strip().splitlines() if line.strip()][-1:]
            return f"application {name!r} failed to deploy: {' '.join(last)}"
    return None


def stage_timeouts(scale: float) -> dict[str, str]:
    """``XSERVE__MIXER__*_TIMEOUT_S`` variables: the mixer's stage timeouts and request deadline times ``scale``."""
    from xserve.config import MixerConfig

    mixer = MixerConfig()
    return {f"XSERVE__MIXER__{name.upper()}": json.dumps(getattr(mixer, name) * scale)
            for name in MixerConfig.__struct_fields__ if name.endswith("_timeout_s")}
