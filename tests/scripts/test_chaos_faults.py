"""scripts/chaoslib/faults.py: the faults by name, and the actors they aim at, named by xserve's one scheme."""

from __future__ import annotations

import pytest

from scripts.chaos import _parser
from scripts.chaoslib.app_process import AppProcess
from scripts.chaoslib.faults import (
    FAULTS,
    Fault,
    IngressReplica,
    NodeLoss,
    PostCatalog,
    RankerReplica,
    RetrievalReplica,
    RetrievalShard,
    ThunderIngest,
    UserStore,
)
from scripts.chaoslib.parts import Parts
from scripts.clusterlib.nodes import NODE_LABEL
from xserve.actors.naming import ActorNames
from xserve.config import load_config
from xserve.sharding import shard_for


@pytest.fixture
def parts(tmp_path) -> Parts:
    """The parts of an app that is never started: enough to name its actors (nothing here reaches Ray)."""
    config = load_config(None, environ={"XSERVE__SERVING__NUM_USER_SHARDS": "3"})
    app = AppProcess(tmp_path / "data", 8000, 2, {}, tmp_path / "app.log", start_timeout_s=1.0)
    return Parts(app, config, seed=0)


def test_the_faults_run_in_this_order_by_default_each_under_its_own_name():
    assert list(FAULTS) == ["thunder_shard", "thunder_ingest", "retrieval_shard", "retrieval_replica", "ranker_replica",
                            "post_catalog", "user_store", "ingress_replica", "node_loss", "full_restart"]
    assert all(issubclass(cls, Fault) and cls.name == name for name, cls in FAULTS.items())
    assert _parser().parse_args([]).faults == ",".join(FAULTS)


def test_a_fault_names_what_feeds_degrade_while_it_lasts():
    assert {name: set(cls.components) for name, cls in FAULTS.items()} == {
        "thunder_shard": {"ThunderSource"},
        "thunder_ingest": {"ThunderSource"},
        "retrieval_shard": {"PhoenixSource"},
        "retrieval_replica": {"PhoenixSource"},
        "ranker_replica": {"PhoenixScorer"},
        "post_catalog": {"CoreDataHydrator", "VideoDurationHydrator", "SubscriptionHydrator", "AuthorInfoHydrator",
                         "VisibilityHydrator"},
        "user_store": {"user_store_stale", "AuthorInfoHydrator"},
        "ingress_replica": set(),  # the HTTP edge: recovered only when nothing is degraded
        "node_loss": {"user_store_stale", "AuthorInfoHydrator"},  # the node held the first probe's user-store shard
        "full_restart": set(),  # the whole app: recovered only when nothing is degraded
    }


def test_user_store_kills_the_shard_owning_the_first_probe(parts, tmp_path):
    names = ActorNames.of(tmp_path / "data")
    for probe in (1, 2, 3, 4, 5):
        fault = UserStore(parts, [probe, 99])
        assert fault.actor_name == names.user_shard(shard_for(probe, 3), 3)
        assert names.owns(fault.actor_name)


def test_retrieval_shard_kills_shard_zero_of_this_data_dir(parts, tmp_path):
    assert RetrievalShard(parts, [1]).actor_name == ActorNames.of(tmp_path / "data").retrieval_shard(0)
    assert not ActorNames.of(tmp_path / "other").owns(RetrievalShard(parts, [1]).actor_name)



def test_the_new_actor_faults_aim_at_this_data_dirs_post_catalog_shard_and_thunder_ingest(parts, tmp_path):
    names = ActorNames.of(tmp_path / "data")
    n = parts.config.serving.num_hydration_shards
    assert PostCatalog(parts, [1]).actor_name == names.post_shard(0, n)
    assert ThunderIngest(parts, [1]).actor_name == names.thunder_ingest()


def test_the_replica_faults_name_their_serve_deployments_and_only_the_ingress_holds_requests():
    assert {cls.name: cls.deployment for cls in (RankerReplica, RetrievalReplica, IngressReplica)} == {
        "ranker_replica": "Ranker", "retrieval_replica": "Retrieval", "ingress_replica": "FeedIngress"}
    assert [name for name, cls in FAULTS.items() if cls.holds_requests] == ["ingress_replica"]
    names = list(FAULTS)
    assert names.index("user_store") < names.index("ingress_replica")  # a new ingress knows no viewer


def test_only_node_loss_starts_the_app_with_a_setting_and_it_puts_every_user_store_shard_on_the_lost_node():
    from xserve.actors.stateful import ActorPlacement

    assert {name for name, cls in FAULTS.items() if cls.app_env()} == {"node_loss"}
    config = load_config(None, environ={**NodeLoss.app_env(), "XSERVE__SERVING__NUM_USER_SHARDS": "2"})
    placement = ActorPlacement.of(config.serving)
    for shard in (0, 1):
        options = placement.options(f"users-{shard}-of-2")
        assert options["label_selector"] == {NODE_LABEL: NodeLoss.worker}  # the node add_worker labels so
        assert options["fallback_strategy"] == [{"label_selector": {}}]  # soft: restarted elsewhere once it is lost
    assert "label_selector" not in placement.options("posts-0-of-1")  # nothing else follows it to the doomed node
