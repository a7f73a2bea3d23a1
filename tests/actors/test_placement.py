"""xserve/actors/stateful.py: ActorPlacement, the Ray options that place each stateful actor (pure: no Ray runs)."""

from __future__ import annotations

import pytest

from xserve.actors.naming import ActorNames
from xserve.actors.stateful import ActorPlacement
from xserve.config import ConfigError, load_config

ANY_NODE = [{"label_selector": {}}]


def test_no_preference_is_the_strategy_alone_and_spread_adds_its_memory_token():
    assert ActorPlacement().options("users-0-of-1") == {"scheduling_strategy": "DEFAULT"}
    spread = ActorPlacement("SPREAD").options("thunder-ingest")
    assert spread["scheduling_strategy"] == "SPREAD" and spread["memory"] > 0 and "label_selector" not in spread


def test_the_most_specific_key_names_the_labels_and_every_preference_falls_back_to_any_node():
    placement = ActorPlacement("SPREAD", {
        "users": {"role": "store"}, "users-1-of-2": {"role": "big"}, "thunder-shard": {"zone": "a"}})
    assert placement.options("users-0-of-2")["label_selector"] == {"role": "store"}  # by kind
    assert placement.options("users-1-of-2")["label_selector"] == {"role": "big"}  # by part: more specific
    assert placement.options("thunder-shard-0-1")["label_selector"] == {"zone": "a"}
    assert "label_selector" not in placement.options("thunder-ingest")  # "thunder-shard" is not its kind
    assert "label_selector" not in placement.options("posts-0-of-1")
    assert all(placement.options(p)["fallback_strategy"] == ANY_NODE for p in ("users-0-of-2", "thunder-shard-0-1"))
    assert placement.options("users-0-of-2")["memory"] > 0  # SPREAD's token still asked for


def test_a_key_matches_whole_words_of_a_part_only():
    placement = ActorPlacement("DEFAULT", {"users-1": {"role": "a"}})
    assert "label_selector" in placement.options("users-1-of-2")
    assert "label_selector" not in placement.options("users-10-of-12")


@pytest.mark.parametrize(("labels", "says"), [
    ({"user": {"role": "a"}}, "names no stateful actor"),
    ({"users": {}}, "no labels"),
    ({"users": {"bad key": "a"}}, "Invalid label key"),
])
def test_bad_node_labels_are_a_config_error_naming_the_key(labels, says):
    with pytest.raises(ConfigError, match=says):
        ActorPlacement("DEFAULT", labels)


def test_the_setting_comes_from_the_environment_as_json_and_names_parts_as_actor_names_do(tmp_path):
    config = load_config(None, environ={"XSERVE__SERVING__ACTOR_NODE_LABELS": '{"ads": {"role": "edge"}}'})
    names = ActorNames.of(tmp_path)
    part = names.part(names.ads())
    assert part == "ads"
    assert ActorPlacement.of(config.serving).options(part)["label_selector"] == {"role": "edge"}
    with pytest.raises(ValueError, match="not an actor of"):
        names.part(ActorNames.of(tmp_path / "other").ads())
