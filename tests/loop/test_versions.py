"""Model versions and their CURRENT pointer, and the version follower the Ranker and Retrieval replicas use (pure)."""

from __future__ import annotations

import threading

import pytest

from xserve.storage.model_versions import ModelVersionError, ModelVersions
from xserve.storage.version_poll import VersionFollower


def write_version(versions: ModelVersions, name: str, at_ms: int) -> None:
    vdir = versions.begin(name)
    for f in ("ranker.pt", "towers.pt"):
        (vdir / f).write_bytes(b"weights of " + name.encode())
    versions.finish(name, at_ms, ranker_version=f"ranker-{name}", towers_version=f"towers-{name}")


def test_train_writes_beside_the_old_version_and_switch_and_rollback_move_current(tmp_path):
    versions = ModelVersions(tmp_path)
    assert versions.current_name() is None and versions.live_paths() == (tmp_path / "models/ranker.pt",
                                                                          tmp_path / "models/towers.pt")
    write_version(versions, "a", 1)
    versions.switch("a", 10)
    write_version(versions, "b", 2)
    assert versions.current_name() == "a"  # a finished version is not live until switched
    versions.switch("b", 20)
    assert versions.current() == {"version": "b", "previous": "a", "switched_at_ms": 20}
    assert versions.live_paths()[0] == tmp_path / "models/vb/ranker.pt"
    assert (tmp_path / "models/ranker.pt").read_bytes() == b"weights of b"  # the unversioned path follows CURRENT
    assert versions.rollback(30)["version"] == "a"
    assert versions.current()["previous"] == "b"  # rolling back twice goes forward again
    assert versions.names() == ["a", "b"]


def test_half_written_and_unknown_versions_are_refused(tmp_path):
    versions = ModelVersions(tmp_path)
    vdir = versions.begin("c")
    (vdir / "ranker.pt").write_bytes(b"x")
    with pytest.raises(ModelVersionError, match="lacks towers.pt"):
        versions.finish("c", 1)
    with pytest.raises(ModelVersionError, match="not complete"):
        versions.switch("c", 1)
    with pytest.raises(ModelVersionError, match="no previous"):
        versions.rollback(1)
    with pytest.raises(ModelVersionError, match="must match"):
        versions.begin("../x")
    assert versions.names() == []


def test_prune_keeps_the_newest_and_never_current_or_previous(tmp_path):
    versions = ModelVersions(tmp_path)
    for i, name in enumerate("abcde"):
        write_version(versions, name, i)
    versions.switch("a", 1)
    versions.switch("b", 2)
    assert versions.prune(2) == ["c"]  # d, e newest; a previous; b current
    assert versions.names() == ["a", "b", "d", "e"]


def test_follower_swaps_the_pair_whole_and_keeps_the_live_one_when_a_load_fails():
    pointer = {"v": "1"}
    loads = []

    def load(v):
        loads.append(v)
        if v == "bad":
            raise OSError("truncated checkpoint")
        return f"model {v}"

    follower = VersionFollower(lambda: pointer["v"], load)
    assert (follower.live.version, follower.live.value) == ("1", "model 1")
    assert follower.poll() is False and loads == ["1"]  # unchanged pointer: no load
    pointer["v"] = "bad"
    assert follower.poll() is False and follower.live.value == "model 1" and follower.failed_loads == 1
    pointer["v"] = "2"
    assert follower.poll() is True and (follower.live.version, follower.live.value) == ("2", "model 2")


def test_a_reader_never_sees_a_version_with_another_versions_value():
    """The pair is replaced by one assignment: readers racing a stream of swaps always see matching halves."""
    pointer = {"v": 0}
    follower = VersionFollower(lambda: str(pointer["v"]), lambda v: f"model {v}")
    mixed, stop = [], threading.Event()

    def read():
        while not stop.is_set():
            live = follower.live
            if live.value != f"model {live.version}":
                mixed.append(live)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    for i in range(1, 2000):
        pointer["v"] = i
        follower.poll()
    stop.set()
    for t in readers:
        t.join()
    assert follower.swaps == 1999 and mixed == []


def test_guardrail_promotes_only_a_candidate_no_worse_on_every_primary_metric():
    from xserve.loop.cycle import guardrail, primary_metrics

    live = primary_metrics({"ranker": {"auc": {"favorite": 0.70, "reply": 0.80}}, "retrieval": {"recall@100": 0.30},
                            "next_engagement": {"ndcg@10": 0.20}})
    assert live["ranker.auc.repost"] is None and live["retrieval.recall@100"] == 0.30
    same = dict(live, **{"ranker.auc.favorite": 0.699})  # within the tolerance
    assert guardrail(same, live, 0.002).promote
    worse = dict(live, **{"retrieval.recall@100": 0.25})
    verdict = guardrail(worse, live, 0.002)
    assert not verdict.promote and verdict["worse"] == {"retrieval.recall@100": (0.25, 0.30)}
    assert verdict["skipped"] == ["ranker.auc.repost"]
    assert not guardrail({"a": None}, {"a": 1.0}, 0.0).promote  # nothing compared: no promotion


def test_the_first_runs_models_are_kept_and_old_embedding_versions_keep_their_towers(tmp_path):
    from xserve.retrieval.encoders import towers_of_version, towers_record

    (tmp_path / "models").mkdir()
    (tmp_path / "models/towers.pt").write_bytes(b"first run")
    versions = ModelVersions(tmp_path)
    write_version(versions, "a", 1)
    versions.switch("a", 2)
    assert (tmp_path / "models/towers.pt").read_bytes() == b"first run"  # not replaced by a link
    assert versions.live_paths()[1] == tmp_path / "models/va/towers.pt"
    # an embedding version from before versions: the first run's towers; a new one: the towers it records
    assert towers_of_version({"version": "initial"}, tmp_path) == str(tmp_path / "models/towers.pt")
    recorded = towers_record(str(versions.towers_path("a")), tmp_path)
    assert recorded == "models/va/towers.pt"
    assert towers_of_version({"towers_checkpoint": recorded}, tmp_path) == str(tmp_path / "models/va/towers.pt")


def test_models_cli_lists_shows_and_rolls_back_with_one_line_errors(tmp_path, capsys):
    from xserve.cli import main

    versions = ModelVersions(tmp_path)
    assert main(["models", "rollback", "--data-dir", str(tmp_path)]) == 2
    assert "no previous model version" in capsys.readouterr().err
    write_version(versions, "a", 1)
    write_version(versions, "b", 2)
    versions.switch("a", 3)
    versions.switch("b", 4)
    assert main(["models", "list", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("* b  ranker ranker-b")
    assert main(["models", "rollback", "--data-dir", str(tmp_path)]) == 0
    assert "models/CURRENT -> a (was b)" in capsys.readouterr().out and versions.current_name() == "a"
    assert main(["models", "show", "nope", "--data-dir", str(tmp_path)]) == 2
    assert "no complete model version nope" in capsys.readouterr().err
