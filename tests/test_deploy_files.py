"""The deployment files, validated by Ray's own code, not only written: ``cluster.yaml`` as ``ray up`` reads
it, ``serve_config.yaml`` as ``serve deploy`` applies it, and the KubeRay ``RayService`` in
``deploy/rayservice.yaml``, whose ``serveConfigV2`` must be ``serve_config.yaml``'s applications.

No Ray starts: each check is the function Ray runs on the file before it starts anything. That the
deployment names match the built application is ``tests/test_app.py``'s check.
"""

from __future__ import annotations

import copy
import importlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _yaml(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / name).read_text())


def launcher_config(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` as ``ray up`` prepares and validates it (defaults filled in, then Ray's JSON schema and
    its cross-field rules); raises what ``ray up`` would."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(doc))
    validate_config(prepared)
    return prepared


def deployed_options(serve_doc: dict[str, Any]) -> dict[str, Any]:
    """Each deployment of ``serve_doc`` (a Serve config file) as ``serve deploy`` applies it: the file through
    ``ServeDeploySchema`` (the check ``serve deploy`` makes before it sends anything), then every deployment's
    options through ``Deployment.options`` of xserve's own deployment (unknown options, bad autoscaling or
    actor options raise there, as they would when the controller applies them). Returns name -> Deployment."""
    from ray.serve.schema import ServeDeploySchema

    # fresh classes, as `serve deploy`'s process has: a test that called a @serve.batch method in-process
    # (tests/deployments/test_ranker_deployment.py) leaves a live batch queue on the class, which then no
    # longer pickles, and `Deployment.options` pickles the class
    modules = [importlib.reload(importlib.import_module(f"xserve.deployments.{m}"))
               for m in ("ingress", "retrieval", "ranker")]
    code = {d.name: d for d in (modules[0].FeedIngress, modules[1].Retrieval, modules[2].Ranker)}
    ServeDeploySchema.model_validate(serve_doc)  # drops unknown options silently: the raw ones go on below
    (app,) = serve_doc["applications"]
    out = {}
    for deployment in app["deployments"]:
        deployment = dict(deployment)
        name = deployment.pop("name")
        assert name in code, f"serve config names deployment {name!r}; the app has {sorted(code)}"
        out[name] = code[name].options(**deployment)
    return out


# --------------------------------------------------------------------------- cluster.yaml


def test_cluster_yaml_is_a_valid_cluster_launcher_file():
    doc = _yaml("cluster.yaml")
    prepared = launcher_config(doc)
    types = prepared["available_node_types"]
    assert {"head", "cpu_worker", "gpu_ranker"} <= set(types)
    assert types["cpu_worker"]["max_workers"] > types["cpu_worker"]["min_workers"]
    assert types["head"]["resources"] == {"CPU": 0}  # no replicas on the head
    assert any("serve deploy serve_config.yaml" in c for c in doc["head_start_ray_commands"])


def test_cluster_yaml_head_commands_name_what_exists():
    """The head's start commands import functions of this checkout and deploy a file of it."""
    commands = " ".join(_yaml("cluster.yaml")["head_start_ray_commands"])
    imports = re.findall(r"from ([\w.]+) import ([\w, ]+);", commands)
    assert imports, commands
    for module, names in imports:
        for name in names.split(","):
            assert hasattr(importlib.import_module(module), name.strip()), f"{module}.{name.strip()}"
    for path in re.findall(r"serve deploy (\S+)", commands):
        assert (ROOT / path).is_file(), path


@pytest.mark.parametrize(
    ("break_it", "needle"),
    [
        (lambda d: d["available_node_types"]["cpu_worker"].update(resourcez={}), "resourcez"),
        (lambda d: d.update(head_node_type="gpu"), "head_node_type"),
        (lambda d: d.update(max_workers=0), "max_workers"),
    ],
)
def test_ray_up_validation_refuses_a_broken_cluster_yaml(break_it, needle):
    """The validation can fail: each break of cluster.yaml is refused with a message naming it."""
    doc = _yaml("cluster.yaml")
    break_it(doc)
    with pytest.raises(Exception, match=needle):
        launcher_config(doc)


# --------------------------------------------------------------------------- serve_config.yaml


def test_serve_config_is_what_serve_deploy_accepts():
    deployments = deployed_options(_yaml("serve_config.yaml"))
    assert sorted(deployments) == ["FeedIngress", "Ranker", "Retrieval"]
    for d in deployments.values():
        auto = d._deployment_config.autoscaling_config
        assert auto is not None and 1 <= auto.min_replicas < auto.max_replicas


def test_autoscaling_targets_leave_room_for_the_app_s_own_limits():
    """Serve adds a replica when the mean requests in flight per replica pass the target: the ingress's target
    must be below the feeds its replica admits (beyond them it answers 503, so the mean could never pass the
    cap), and the Ranker's at least a batch (below it, replicas are added before a batch can fill)."""
    from xserve.config import XServeConfig

    config = XServeConfig()
    deployments = deployed_options(_yaml("serve_config.yaml"))
    ingress = deployments["FeedIngress"]._deployment_config
    assert ingress.autoscaling_config.target_ongoing_requests < config.serving.max_inflight_feeds
    ranker = deployments["Ranker"]._deployment_config
    assert ranker.autoscaling_config.target_ongoing_requests >= config.ranker_serving.max_batch_size
    assert ranker.max_ongoing_requests > ranker.autoscaling_config.target_ongoing_requests  # the next batch forms


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"max_ongoing_requestz": 8}, "max_ongoing_requestz"),  # a typo Serve's schema alone lets through
        ({"autoscaling_config": {"min_replicas": 3, "max_replicas": 1}}, "max_replicas"),
        ({"ray_actor_options": {"num_cpu": 1}}, "num_cpu"),
        ({"max_ongoing_requests": 0}, "max_ongoing_requests"),
    ],
)
def test_serve_deploy_validation_refuses_a_broken_deployment(change, needle):
    doc = _yaml("serve_config.yaml")
    doc["applications"][0]["deployments"][0].update(change)
    with pytest.raises(Exception, match=needle):
        deployed_options(doc)


# --------------------------------------------------------------------------- deploy/rayservice.yaml


def test_rayservice_serves_serve_config_yaml():
    import ray

    doc = _yaml("deploy/rayservice.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayService")
    serve_doc = yaml.safe_load(doc["spec"]["serveConfigV2"])  # KubeRay takes it as a string of YAML
    assert set(serve_doc) == {"applications"}
    deployed_options(serve_doc)
    assert serve_doc["applications"] == _yaml("serve_config.yaml")["applications"], (
        "deploy/rayservice.yaml's serveConfigV2 differs from serve_config.yaml's applications: copy them over"
    )
    cluster = doc["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == ray.__version__
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:  # KubeRay's rayStartParams is map[string]string: a bare number is refused
        assert all(isinstance(v, str) for v in group["rayStartParams"].values()), group["rayStartParams"]
        for container in group["template"]["spec"]["containers"]:
            assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]  # the shared data dir
    data_dir = serve_doc["applications"][0]["runtime_env"]["env_vars"]["XSERVE_DATA_DIR"]
    assert data_dir.startswith("/data/")
    gpu = [g for g in cluster["workerGroupSpecs"] if "nvidia.com/gpu" in str(g["template"])]
    assert gpu, "a worker group with GPUs for the Ranker (num_gpus: 1)"
