"""A real-data path: an engagement log in the documented import format (README, "Engagement log format"), with
and without the optional columns, goes through ``xserve import``, ``xserve train`` and ``xserve evaluate --json``.

The log has strong popularity structure (a Zipf law over posts), so even a tiny model trained for a few
steps ranks engaged posts above sampled unengaged ones better than random. Models are sized to the log
(``TINY_MODEL``); both logs together run in about ten seconds on an idle 2-core machine.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from xserve.cli import main

DAY_MS = 86_400_000

TINY_MODEL = """
[phoenix]
emb_dim = 32
num_layers = 1
key_size = 8
history_len = 16
user_vocab = 1009
post_vocab = 4001
author_vocab = 257

[train]
epochs = 1
batch_size = 32
ranker_positives = 8
ranker_negatives = 8
ranker_examples_per_epoch = 256
tower_examples_per_epoch = 256
eval_max_queries = 60
eval_sampled_candidates = 20
validation_fraction = {validation_fraction}
"""


def write_log(path: Path, optional: bool, seed: int = 0) -> int:
    """A CSV log of 150 users over 6 days: each visit picks a post of the last two days by a Zipf law over
    posts, and clicks it (a favorite when the author is on the user's topic); returns the rows written."""
    rng = np.random.default_rng(seed)
    start = (int(time.time() * 1000) - 8 * DAY_MS) // 1000 * 1000  # within the importer's accepted range
    n_posts, n_authors = 400, 25
    created = np.sort(start + rng.integers(0, 6 * DAY_MS, n_posts))
    author = rng.integers(1, n_authors + 1, n_posts)
    weight = 1.0 / (1 + rng.permutation(n_posts)) ** 1.1
    user_topic, author_topic = rng.integers(0, 3, 151), rng.integers(0, 3, n_authors + 1)
    header = "user_id,post_id,author_id,action,timestamp" + (",post_created_at,dwell_ms,product_surface" if optional else "")
    rows = [header]
    for user in range(1, 151):
        for t in np.sort(start + DAY_MS + rng.integers(0, 5 * DAY_MS, 30)):
            live = np.flatnonzero((created <= t) & (created > t - 2 * DAY_MS))
            if not len(live):
                continue
            p = int(rng.choice(live, p=weight[live] / weight[live].sum()))
            actions = ["click"] + (["favorite"] if author_topic[author[p]] == user_topic[user] else [])
            for k, action in enumerate(actions):
                row = f"{user},{10_000 + p},{author[p]},{action},{int(t) + k}"
                if optional:
                    row += f",{created[p]},{1500 if action == 'click' else ''},{'explore' if k else 1}"
                rows.append(row)
    path.write_text("\n".join(rows) + "\n")
    return len(rows) - 1


def _run(capsys, *argv: str) -> str:
    capsys.readouterr()
    assert main(list(argv)) == 0, capsys.readouterr().err
    return capsys.readouterr().out


@pytest.mark.parametrize("optional", [True, False], ids=["all-columns", "required-only"])
def test_import_train_evaluate_a_log(tmp_path, capsys, optional):
    log, data = tmp_path / "log.csv", str(tmp_path / "data")
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_MODEL.format(validation_fraction=0.2))
    rows = write_log(log, optional)
    assert f"accepted {rows} rows ({rows} new" in _run(capsys, "import", "--input", str(log), "--data-dir", data)
    assert "trained on" in _run(capsys, "--config", str(config), "train", "--data-dir", data, "--quiet")
    out = json.loads(_run(capsys, "--config", str(config), "evaluate", "--data-dir", data, "--json"))

    assert set(out) == {"ranker", "retrieval", "next_engagement", "baselines"}  # no oracle: not a synthetic world
    assert set(out["baselines"]) == {"popularity", "item_knn", "random"}
    assert set(out["ranker"]) == {"auc", "rce", "viewer_dependence"}  # the model's own figure: not for the baselines
    for block in (out, *out["baselines"].values()):
        assert {"auc", "rce"} <= set(block["ranker"]) and set(block["ranker"]["auc"]) == {"click", "favorite"}
        assert set(block["retrieval"]) == {"recall@10", "recall@100", "recall@1000"}
        assert set(block["next_engagement"]) == {"hr@10", "ndcg@10"}
        assert all(0.0 <= v <= 1.0 for v in (*block["ranker"]["auc"].values(), *block["retrieval"].values(),
                                            *block["next_engagement"].values()))
    # engaged posts vs sampled unengaged ones: popularity alone separates them, and so does the tiny model
    assert out["ranker"]["auc"]["click"] > out["baselines"]["random"]["ranker"]["auc"]["click"] + 0.1

    if optional:  # evaluation keeps the split recorded at training, whatever validation_fraction says now
        config.write_text(TINY_MODEL.format(validation_fraction=0.6))
        assert json.loads(_run(capsys, "--config", str(config), "evaluate", "--data-dir", data, "--json")) == out
