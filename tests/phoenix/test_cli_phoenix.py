import json
import os
import subprocess
import sys

import pytest


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "xserve", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_missing_data_is_one_line_and_exit_2(tmp_path, command):
    r = run(command, "--data-dir", str(tmp_path / "nothing"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "xserve seed" in r.stderr and "xserve import" in r.stderr


def test_data_dir_defaults_to_the_environment(tmp_path):
    r = run("train", env={"XSERVE_DATA_DIR": str(tmp_path / "from-env")})
    assert r.returncode == 2 and "from-env" in r.stderr


# A model small enough to train in seconds, trained enough (2 epochs of 1,000 ranker examples) to beat the
# random baseline clearly: next-engagement HR@10 0.22 against 0.12 over 147 queries (seeds 1 and 2 of
# train.seed: 0.16 against 0.11, 0.29 against 0.06). With 128 examples it was no better than random.
TINY = {
    "XSERVE__PHOENIX__EMB_DIM": "32", "XSERVE__PHOENIX__NUM_LAYERS": "1", "XSERVE__PHOENIX__KEY_SIZE": "8",
    "XSERVE__PHOENIX__HISTORY_LEN": "16", "XSERVE__PHOENIX__POST_VOCAB": "20011",
    "XSERVE__PHOENIX__USER_VOCAB": "2003", "XSERVE__PHOENIX__AUTHOR_VOCAB": "2003",
    "XSERVE__PHOENIX__CONTENT_VOCAB": "2003",
    "XSERVE__TRAIN__EPOCHS": "2", "XSERVE__TRAIN__RANKER_EXAMPLES_PER_EPOCH": "1000",
    "XSERVE__TRAIN__TOWER_EXAMPLES_PER_EPOCH": "128", "XSERVE__TRAIN__EVAL_MAX_QUERIES": "200",
}


def test_train_then_evaluate_json_on_a_seeded_world(tmp_path):
    data = str(tmp_path / "data")
    assert run("seed", "--size", "tiny", "--data-dir", data).returncode == 0
    r = run("evaluate", "--data-dir", data)
    assert r.returncode == 2 and "xserve train" in r.stderr
    r = run("train", "--data-dir", data, "--quiet", env=TINY)
    assert r.returncode == 0, r.stderr
    assert os.path.isfile(os.path.join(data, "models", "ranker.pt"))
    r = run("evaluate", "--data-dir", data, "--json", env=TINY)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) == {"ranker", "retrieval", "next_engagement", "baselines", "oracle"}  # a synthetic world
    # the trained ranker finds the next engagement more often than random scores do (the same run's baseline)
    hit_rate = out["next_engagement"]["hr@10"]
    assert hit_rate > out["baselines"]["random"]["next_engagement"]["hr@10"], out
    assert set(out["baselines"]) == {"popularity", "item_knn", "random"}
    oracle = out["oracle"]
    assert set(oracle) == {"ranker", "retrieval", "next_engagement"}
    assert set(oracle["ranker"]["auc"]) == set(out["ranker"]["auc"]) and set(oracle["retrieval"]) == set(out["retrieval"])
    # the world's own model ranks favorites among the engaged and sampled posts better than chance
    assert oracle["ranker"]["auc"]["favorite"] > out["baselines"]["random"]["ranker"]["auc"]["favorite"] + 0.1
    # the world's favorite depends on who reads (topic interests, follows); the figure is printed for the model too
    assert oracle["ranker"]["viewer_dependence"] > 0.3 and out["ranker"]["viewer_dependence"] >= 0.0
