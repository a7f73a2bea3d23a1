"""The application's composition and its deployment files, without starting Serve."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

import xserve
from xserve.config import XServeConfig, load_config, merge_config

ROOT = Path(__file__).resolve().parents[1]


def _needs_ranker() -> None:
    pytest.importorskip("xserve.deployments.ranker", reason="the Ranker deployment (ranker branch) is not on this tree")


def test_importing_xserve_app_builds_nothing():
    import xserve.app as module

    assert "app" not in vars(module) or module.app is not None  # built lazily, on first access only


def test_serve_run_xserve_app_resolves_to_the_application(monkeypatch, tmp_path):
    """``serve run xserve.app`` imports ``xserve`` and reads its attribute ``app`` (Ray splits at the last dot)."""
    _needs_ranker()
    from ray._common.utils import import_attr
    from ray.serve import Application

    import xserve.app as module

    prepared = []
    monkeypatch.setenv("XSERVE_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(module, "prepare_data_dir", lambda config: prepared.append(config))
    monkeypatch.delattr(xserve, "app", raising=False)
    monkeypatch.delitem(vars(module), "app", raising=False)
    app = import_attr("xserve.app")
    assert isinstance(app, Application)
    assert [c.storage.data_dir for c in prepared] == [str(tmp_path)]
    assert isinstance(import_attr("xserve.app:app"), Application)


def _deployment_names(app) -> list[str]:
    from ray.serve._private.build_app import build_app as serve_build

    return sorted(d.name for d in serve_build(app, name="default").deployments)


def test_serve_config_matches_the_application():
    _needs_ranker()
    from ray.serve.schema import ServeDeploySchema

    from xserve.app import build_app

    doc = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(doc)
    (app_schema,) = schema.applications
    assert app_schema.import_path == "xserve.app:app"
    names = sorted(d.name for d in app_schema.deployments)
    assert names == _deployment_names(build_app(load_config(environ={}), prepare=False))
    ingress = next(d for d in app_schema.deployments if d.name == "FeedIngress")
    for d in app_schema.deployments:
        auto = d.autoscaling_config
        assert auto["min_replicas"] <= auto["max_replicas"] and auto["target_ongoing_requests"] > 0
        assert d.max_queued_requests > 0 and d.max_ongoing_requests > 0
    # the live settings are valid config sections: with the file's values, the defaults
    assert merge_config(XServeConfig(), ingress.user_config) == XServeConfig()


def test_merge_config_changes_only_what_it_names():
    from xserve.config import ConfigError


    merged = merge_config(XServeConfig(), {"scoring": {"weights": {"reply": 1.0}}, "mixer": {"result_size": 10}})
    assert merged.scoring.weights.reply == 1.0 and merged.mixer.result_size == 10
    assert merged.scoring.weights.favorite == XServeConfig().scoring.weights.favorite
    with pytest.raises(ConfigError):
        merge_config(XServeConfig(), {"scoring": {"weights": {"nope": 1.0}}})


def test_cluster_yaml_is_a_valid_cluster_launcher_file():
    import jsonschema
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    doc = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    jsonschema.validate(doc, schema)
    types = doc["available_node_types"]
    assert {"head", "cpu_worker", "gpu_ranker"} <= set(types)
    assert types["cpu_worker"]["max_workers"] > types["cpu_worker"]["min_workers"]
    assert any("serve deploy serve_config.yaml" in c for c in doc["head_start_ray_commands"])


def test_xserve_serve_rejects_a_bad_port():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "xserve", "serve", "--port", "70000"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2 and out.stderr.strip() == "xserve: error: --port must be in 1..65535, got 70000"
