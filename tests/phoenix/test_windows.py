"""Logs that are not short-lived posts: the negatives and corpus windows are settings, and evaluation says
when the corpus per query is too small for the recall@k it reports (issue 14, item 6)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from xserve.cli import _config, _parser
from xserve.phoenix.model.towers import PhoenixTowers
from xserve.phoenix.training.evaluate import ItemKNN, PriorCounts, _retrieval_metrics, corpus_warnings
from xserve.phoenix.training.train import corpus_max_age_ms, negatives_max_age_ms, prepare

from .factories import T0, engagement_table, tiny_config

DAY = 86_400_000


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_window_flags_set_the_train_config_and_default_to_the_feed_window(command):
    args = _parser().parse_args([command, "--negatives-max-age", "180d", "--corpus-max-age", "36h"])
    config = _config(args)
    assert (config.train.negatives_max_age_ms, config.train.corpus_max_age_ms) == (180 * DAY, 36 * 3_600_000)
    assert (negatives_max_age_ms(config), corpus_max_age_ms(config)) == (180 * DAY, 36 * 3_600_000)
    default = _config(_parser().parse_args([command]))
    assert (default.train.negatives_max_age_ms, default.train.corpus_max_age_ms) == (0, 0)  # 0 = the feed's
    assert negatives_max_age_ms(default) == corpus_max_age_ms(default) == default.mixer.max_post_age_ms
    with pytest.raises(SystemExit):  # argparse: exit 2 with one line
        _parser().parse_args([command, "--corpus-max-age", "soon"])


def test_corpus_warnings_name_each_k_the_corpus_cannot_support():
    assert corpus_warnings(np.array([50_000, 20_000, 30_000]), 2 * DAY) == []
    lines = corpus_warnings(np.array([400, 500, 600]), 2 * DAY)
    assert [line.split()[1] for line in lines] == ["recall@100", "recall@1000"]  # 500 >= 10·10, < 10·100
    assert "median corpus of 500 posts" in lines[0] and "corpus_max_age_ms" in lines[0]


def _months_long_log():
    """The factory's log stretched 100-fold: posts created over 200 days, engaged over 250 (a catalogue)."""
    eng, posts = engagement_table()

    def stretch(col):
        return pc.add(pc.multiply(pc.subtract(col, T0), 100), T0)

    eng = eng.set_column(eng.column_names.index("timestamp_ms"), "timestamp_ms", stretch(eng.column("timestamp_ms")))
    eng = eng.set_column(eng.column_names.index("post_created_at_ms"), "post_created_at_ms",
                         stretch(eng.column("post_created_at_ms")))
    posts = posts.set_column(2, "created_at_ms", stretch(posts.column("created_at_ms")))
    return pa.table(eng), posts


def test_a_long_lived_log_warns_under_the_feed_window_and_not_once_the_corpus_window_fits():
    eng, posts = _months_long_log()
    for window_ms in (0, 400 * DAY):
        config = tiny_config(corpus_max_age_ms=window_ms, eval_max_queries=40)
        data = prepare(eng, posts, config)
        towers = PhoenixTowers(data.config.phoenix).eval()
        lines: list[str] = []
        out = _retrieval_metrics(data, towers, PriorCounts(data.entries), ItemKNN(data.entries), None,
                                 np.random.default_rng(0), lines.append)
        if not window_ms:  # under 48 h nearly every target is too old to be in the corpus: said, not scored
            assert any("validation targets were older than the corpus window (48 h" in line for line in lines), lines
            continue
        assert not any("targets were older" in line or "recall@10 " in line for line in lines), lines
        assert any("recall@1000 " in line for line in lines)  # 180 posts in all: never enough for k = 1000
        assert out["random"]["recall@10"] < 0.5  # a corpus of the whole catalogue: random is no longer 1.0
