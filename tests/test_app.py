"""The application's composition and its deployment files, without starting Serve."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from xserve.config import XServeConfig, merge_config

ROOT = Path(__file__).resolve().parents[1]


# Built in a fresh interpreter, as `serve run` / `serve build` do: a process that already ran a
# deployment in local testing mode (other tests) holds @serve.batch state that cannot be pickled.
_BUILD = r"""
import json, sys
import ray
import xserve, xserve.app as module
at_import = {"app_built": "app" in vars(module), "ray_started": ray.is_initialized()}
from ray._common.utils import import_attr
from ray.serve import Application
from ray.serve._private.build_app import build_app as serve_build

prepared = []
module.prepare_data_dir = lambda config: prepared.append(config.storage.data_dir)
delattr(xserve, "app")  # as in the serve CLI's process, where nothing imported xserve.app yet
app = import_attr("xserve.app")
print(json.dumps({
    "at_import": at_import,
    "serve_run_type": type(app).__name__,
    "is_application": isinstance(app, Application),
    "colon_is_application": isinstance(import_attr("xserve.app:app"), Application),
    "prepared": prepared,
    "deployments": sorted(d.name for d in serve_build(app, name="default").deployments),
}))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("built")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XSERVE_DATA_DIR": str(data_dir)}
    out = subprocess.run([sys.executable, "-c", _BUILD], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "data_dir": str(data_dir)}


def test_importing_xserve_app_builds_nothing(built):
    """In a fresh interpreter (as ``serve build`` imports it): no application, no Ray, until ``app`` is read."""
    assert built["at_import"] == {"app_built": False, "ray_started": False}


def test_serve_run_xserve_app_resolves_to_the_application(built):
    """``serve run xserve.app`` imports ``xserve`` and reads its attribute ``app`` (Ray splits at the last dot)."""
    assert built["is_application"] and built["colon_is_application"], built["serve_run_type"]
    assert built["prepared"] == [built["data_dir"]]  # the first access prepared $XSERVE_DATA_DIR once


def test_serve_config_matches_the_application(built):
    from ray.serve.schema import ServeDeploySchema

    doc = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(doc)
    (app_schema,) = schema.applications
    assert app_schema.import_path == "xserve.app:app"
    assert sorted(d.name for d in app_schema.deployments) == built["deployments"]
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


def test_xserve_serve_rejects_a_bad_port():
    out = subprocess.run([sys.executable, "-m", "xserve", "serve", "--port", "70000"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2 and out.stderr.strip() == "xserve: error: --port must be in 1..65535, got 70000"


def test_ingress_options_bound_serve_and_refuse_bad_limits():
    from xserve.app import ingress_options
    from xserve.config import ConfigError

    opts = ingress_options(XServeConfig())
    assert opts["max_queued_requests"] > 0 and opts["backpressure_config"] == {"status_code": 503, "retry_after_s": 1.0}
    s = XServeConfig().serving
    assert opts["max_ongoing_requests"] > s.max_inflight_feeds + s.max_inflight_writes  # the replica refuses first
    for name in ("max_inflight_feeds", "ingress_max_queued_requests"):
        with pytest.raises(ConfigError, match=name):
            ingress_options(merge_config(XServeConfig(), {"serving": {name: 0}}))
