"""scripts/autoscale_check.py: its arguments, the ramp, what a trace of replica and node counts says, the
autoscaling twin of ``serve_config.yaml`` and the fake provider's config.

The run itself (a head with Ray's fake multi-node provider, the app scaling out under a ramp and back,
a node added and removed) takes minutes on the development machine, longer than CI's budget allows: it
is the script (README, "Running on a cluster"; docs/cluster.md, "Autoscaling observed").
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scripts.autoscale_check import main
from scripts.clusterlib.autoscaler import RANKER_NODE_TYPE, fake_autoscaling_config
from scripts.clusterlib.scaling import Ramp, ScaleTrace
from scripts.clusterlib.twin import autoscaling_twin, twin_serve_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [(["--max-ranker-replicas", "1"], "--max-ranker-replicas"), (["--start-clients", "40"], "--start-clients"),
     (["--downscale-delay-s", "0"], "--downscale-delay-s"), (["--users", "3"], "--users"), (["--port", "0"], "--port")],
)
def test_bad_arguments_exit_2_with_one_line(argv, needle, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("autoscale_check.py: error:") and needle in err


def test_the_ramp_adds_clients_step_by_step_up_to_its_peak():
    ramp = Ramp(start=2, step=3, step_s=10, peak=10)
    assert [ramp.clients_at(t) for t in (0, 9.9, 10, 25, 30, 100, -5)] == [2, 2, 5, 8, 10, 10, 2]
    with pytest.raises(ValueError, match="start <= peak"):
        Ramp(start=5, step=1, step_s=1, peak=4)


def _trace() -> ScaleTrace:
    trace = ScaleTrace({"FeedIngress": 1, "Ranker": 1})
    for t, ingress, ranker, workers in [
        (0, 1, 1, 0), (10, 2, 1, 0), (20, 3, 2, 0), (25, 3, 2, 1), (30, 3, 2, 1),  # the ramp ends at 30
        (40, 2, 2, 1), (60, 1, 2, 1), (70, 1, 1, 1), (80, 2, 1, 1), (90, 1, 1, 1), (100, 1, 1, 0), (110, 1, 1, 0),
    ]:
        trace.add(t, {"FeedIngress": ingress, "Ranker": ranker}, workers)
    return trace


def test_the_trace_gives_the_most_replicas_the_nodes_added_and_when_all_was_back():
    trace = _trace()
    assert trace.max_replicas("FeedIngress") == 3 and trace.max_replicas("Ranker") == 2
    assert trace.scaled_out("Ranker") and not trace.scaled_out("Ranker", at_least=3)
    assert trace.nodes_added == 1
    assert trace.scale_in_s() is None and trace.nodes_removed_s() is None  # no ramp end yet
    trace.ramp_end = 30
    assert trace.scale_in_s() == 60  # at 70 all were at the minimum, but the ingress went up again at 80
    assert trace.nodes_removed_s() == 70
    trace.add(120, {"FeedIngress": 1, "Ranker": 2}, 0)  # not settled while a deployment is above its minimum
    assert trace.scale_in_s() is None
    with pytest.raises(ValueError, match="forward in time"):
        trace.add(100, {}, 0)


def test_no_node_added_is_no_node_removed():
    trace = ScaleTrace({"Ranker": 1})
    trace.add(0, {"Ranker": 1}, 0)
    trace.add(5, {"Ranker": 2}, 0)
    trace.add(9, {"Ranker": 1}, 0)
    trace.ramp_end = 6
    assert trace.nodes_added == 0 and trace.nodes_removed_s() is None and trace.scale_in_s() == 3


def test_the_autoscaling_twin_scales_ingress_and_ranker_with_the_file_s_settings(tmp_path):
    from ray.serve.schema import ServeDeploySchema

    source = ROOT / "serve_config.yaml"
    twin = twin_serve_config(source, str(tmp_path), {}, 8401)
    doc = autoscaling_twin(twin, source, {"FeedIngress": 3, "Ranker": 2}, {"downscale_delay_s": 20})
    ServeDeploySchema.model_validate(doc)
    (before,) = yaml.safe_load(source.read_text())["applications"]
    original = {d["name"]: d for d in before["deployments"]}
    scaled = {d["name"]: d for d in doc["applications"][0]["deployments"]}
    for name, most in (("FeedIngress", 3), ("Ranker", 2)):
        assert scaled[name]["autoscaling_config"] == {
            **original[name]["autoscaling_config"], "max_replicas": most, "downscale_delay_s": 20}
    assert scaled["Ranker"]["ray_actor_options"]["num_gpus"] == original["Ranker"]["ray_actor_options"]["num_gpus"] == 1
    assert scaled["FeedIngress"]["ray_actor_options"]["num_gpus"] == 0
    assert scaled["Retrieval"] == {d["name"]: d for d in twin["applications"][0]["deployments"]}["Retrieval"]
    with pytest.raises(ValueError, match="no autoscaling_config"):
        broken = tmp_path / "serve_config.yaml"
        text = yaml.safe_load(source.read_text())
        del text["applications"][0]["deployments"][2]["autoscaling_config"]
        broken.write_text(yaml.safe_dump(text))
        autoscaling_twin(twin, broken, {"Ranker": 2})


def test_the_fake_provider_config_passes_ray_s_own_validation():
    from ray.autoscaler._private.util import validate_config

    config = fake_autoscaling_config("10.0.0.1:6390", max_ranker_nodes=1, idle_timeout_s=30)
    validate_config(config)
    assert config["provider"]["gcs_address"] == "10.0.0.1:6390" and config["idle_timeout_minutes"] == 0.5
    ranker = config["available_node_types"][RANKER_NODE_TYPE]
    assert (ranker["resources"]["GPU"], ranker["min_workers"], ranker["max_workers"]) == (1, 0, 1)
