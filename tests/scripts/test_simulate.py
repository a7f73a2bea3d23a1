"""The closed-loop simulator end to end, tiny: two readers, one page each, every policy, over the session app.

The full run (a fresh small world, every policy, a retrain) is ``python scripts/simulate.py``; its table is in
docs/simulation.md.
"""

from __future__ import annotations

import re

import httpx
import pytest

from scripts.simulate import FIGURES, POLICIES, main, paired_ratio, traffic_bytes
from xserve.loop.impressions import read_impression_records
from xserve.schema import FeedSeen
from xserve.storage.lance.embeddings import EmbeddingVersions
from xserve.storage.layout import DataDirLayout

pytestmark = pytest.mark.ray

LINE = re.compile(r"^(\S+) (\S+) (\S+)$")


def test_every_policy_prints_its_figures_and_they_are_sane(served_app, capsys):
    argv = ["--url", served_app.url, "--data-dir", served_app.config.storage.data_dir,
            "--api-key", served_app.auth["Authorization"].removeprefix("Bearer "),
            "--users", "2", "--pages", "1", "--page-size", "10", "--candidates", "50", "--post-every", "2",
            "--attention-decay", "0.95"]
    logs = DataDirLayout(served_app.config.storage.data_dir).impression_logs

    def seen_reports() -> set[tuple[str, tuple[int, ...]]]:
        return {(r.request_id, r.post_ids) for r in read_impression_records(logs) if isinstance(r, FeedSeen)}

    earlier = seen_reports()
    assert main(argv) == 0
    out = capsys.readouterr().out
    with capsys.disabled():  # the figures, in the log of the run
        print("\n" + out)
    figures = {}
    for line in out.splitlines():
        m = LINE.match(line)
        assert m, f"not a `name value unit` line: {line!r}"
        figures[m[1]] = float(m[2])
    for policy in POLICIES:
        for name in FIGURES:
            assert f"sim.{policy}.{name}" in figures, (policy, name)
        assert figures[f"sim.{policy}.sessions"] == 2
        assert figures[f"sim.{policy}.viewed"] >= 1  # two readers read at least the top post each
        assert 0.0 <= figures[f"sim.{policy}.engagement_rate"] <= 1.0
        assert 0.0 <= figures[f"sim.{policy}.negative_rate"] <= 1.0
        assert figures[f"sim.{policy}.dwell_s_per_session"] >= 0.0
        assert figures[f"sim.{policy}.unregretted_s_per_session"] <= figures[f"sim.{policy}.dwell_s_per_session"]
    assert figures["sim.request_errors"] == 0
    assert figures["sim.disk_traffic_bytes"] > 0 and figures["sim.disk_growth_per_hour"] > 0  # the logged feeds
    # every policy's reader reported what it viewed (POST /v1/impressions): one report per page read, those posts
    reported = seen_reports() - earlier
    assert len(reported) == sum(figures[f"sim.{p}.sessions"] for p in POLICIES)  # one page per session here
    assert sum(len(ids) for _, ids in reported) == sum(figures[f"sim.{p}.viewed"] for p in POLICIES)
    assert figures["sim.posts_created"] == 4  # 8 sessions, one post every 2
    assert not any(name.startswith("sim.retrained") for name in figures)  # --url: no retrain
    # the retrain waits for retrieval's version in the admin stats: the live one is there
    stats = httpx.get(f"{served_app.url}/v1/admin/stats", headers=served_app.auth, timeout=30).json()
    assert stats["retrieval"]["version"] == EmbeddingVersions(served_app.config.storage.data_dir).current_name()


def test_paired_ratios_cancel_what_the_sessions_share():
    """Two policies on the same sessions: a ratio's error comes from their per-session differences only."""
    from xserve.synth.behaviour import SessionTally

    def tally(scale: float) -> SessionTally:
        t = SessionTally(regret_s=30.0)
        for unregretted in (5.0, 50.0, 500.0):  # sessions that differ a lot from one another
            t.start_session()
            t.rows[-1][4] = t.rows[-1][6] = scale * unregretted  # unregretted_s, expected_unregretted_s
        return t

    ratio, se = paired_ratio(tally(2.0), tally(1.0), "unregretted_s_per_session", None)
    assert ratio == pytest.approx(2.0) and se == pytest.approx(0.0, abs=1e-12)  # unpaired, the error would be huge


def test_a_data_dir_without_a_trained_world_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--data-dir", str(tmp_path)])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "needs a seeded world" in err and "xserve seed" in err


def test_traffic_bytes_leave_out_model_and_embedding_versions(tmp_path):
    layout = DataDirLayout(tmp_path)
    for path, size in ((layout.impression_logs / "0.log", 100), (layout.models / "v1" / "ranker.pt", 1_000),
                       (layout.embeddings / "v1" / "part.lance", 10_000), (tmp_path / "users.lance" / "x", 7)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
    assert traffic_bytes(tmp_path) == 107  # what serving wrote; a retrain's models and embeddings are not traffic
