"""scripts/tower_sweep.py, one representative case: two tower variants on the tiny world, one line per figure."""

from __future__ import annotations

import re

from scripts.tower_sweep import main


def test_tower_sweep_prints_recall_per_variant(tiny_world, tmp_path, capsys):
    config = tmp_path / "small.toml"  # the tiny world's model sizes, and few tower examples
    config.write_text("[phoenix]\nuser_vocab = 4001\npost_vocab = 40009\nauthor_vocab = 4001\nnum_layers = 1\n"
                      "[train]\nepochs = 1\nbatch_size = 32\ntower_examples_per_epoch = 96\neval_max_queries = 50\n")
    assert main(["--data-dir", str(tiny_world), "--config", str(config), "--try", "base=",
                 "--try", "mixed=tower_uniform_negatives=64,tower_learned_temperature=true"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in ("base", "mixed"):
        for k in (10, 100, 1000):
            assert any(re.fullmatch(rf"{name}\.recall@{k} [01]\.\d{{4}} recall", line) for line in lines), lines
        assert f"{name}.steps 3 steps" in lines
