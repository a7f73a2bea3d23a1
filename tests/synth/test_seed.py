"""Seeding a data directory: tables as generated, refusal without --force, the CLI end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from xserve.storage import DataDir, DataDirError
from xserve.synth.seed import seed_data_dir

NOW_MS = 1_790_000_000_000


def test_seeded_tables_hold_the_generated_world(tmp_path):
    dd = DataDir(tmp_path / "d", fsync=False)
    world = seed_data_dir(dd, "tiny", seed=3, now_ms=NOW_MS)
    assert dd.counts() == world.counts() and dd.has_world()
    eng = dd.read_engagement_arrays(["user_id", "post_id", "timestamp_ms", "dwell_ms"])
    for name, values in eng.items():
        assert np.array_equal(values, world.engagements[name]), name
    posts = dd.read_posts(["post_id", "in_reply_to_post_id", "labels"]).to_pydict()
    assert posts["in_reply_to_post_id"] == list(world.posts["in_reply_to_post_id"])
    assert posts["labels"] == [[str(x) for x in labels] for labels in world.posts["labels"]]
    assert np.array_equal(dd.read_edges("follow").column("target_id").to_numpy(),
                          world.edges["target_id"][world.edges["kind"] == "follow"])
    meta = dd.meta()["world"]
    assert (meta["size"], meta["seed"], meta["now_ms"]) == ("tiny", 3, NOW_MS)
    truth = dd.read_ground_truth()
    assert np.array_equal(truth["user_interests"], world.ground_truth["user_interests"])
    with pytest.raises(DataDirError, match="--force"):
        seed_data_dir(dd, "tiny", seed=4, now_ms=NOW_MS)
    seed_data_dir(dd, "tiny", seed=4, now_ms=NOW_MS, force=True)
    assert dd.meta()["world"]["seed"] == 4


def test_cli_seed_tiny_end_to_end(tmp_path):
    """One subprocess (importing lancedb costs seconds); the --force refusal is checked above."""
    env = {**os.environ, "XSERVE_DATA_DIR": str(tmp_path / "from-env")}
    cmd = [sys.executable, "-m", "xserve", "seed", "--size", "tiny", "--seed", "1", "--now-ms", str(NOW_MS)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "seeded a tiny world (seed 1)" in r.stdout and "from-env" in r.stdout
    dd = DataDir(tmp_path / "from-env")
    assert dd.has_world() and dd.count("users") == 200
    assert json.loads((tmp_path / "from-env" / "meta.json").read_text())["world"]["seed"] == 1
