"""scripts/chaoslib/report.py: the chaos run's ``name value unit`` lines and table, character for character."""

from __future__ import annotations

import re

from scripts.chaoslib.report import figure_lines, report, say, table_lines
from scripts.chaoslib.results import Result


def recovered() -> Result:
    # 1,000 answered requests during the fault (its p99: 812.3 ms), fewer after (a maximum)
    during = [10.0] * 989 + [812.345] * 11
    return Result("thunder_shard", requests=120, errors_5xx=0, errors_4xx=1, conn_errors=2, down_errors=0,
                  degraded_during=7, ms_during=during, ms_during_feed=[600.0, 640.0], ms_after=[5.0, 95.55],
                  recovery_s=2.345, state_match=1)


def not_recovered() -> Result:
    return Result("full_restart", requests=9, down_errors=31)  # nothing measured: NaN latencies and recovery


def test_figure_lines_put_the_five_headline_figures_first():
    assert figure_lines(recovered()) == [
        "chaos.thunder_shard.requests 120",
        "chaos.thunder_shard.errors_5xx 0",
        "chaos.thunder_shard.p99_ms_during 812.3 ms",
        "chaos.thunder_shard.recovery_s 2.35 s",
        "chaos.thunder_shard.state_match 1",
        "chaos.thunder_shard.errors_4xx 1",
        "chaos.thunder_shard.conn_errors 2",
        "chaos.thunder_shard.down_errors 0",
        "chaos.thunder_shard.degraded_during 7",
        "chaos.thunder_shard.max_ms_during_feed 640.0 ms",
        "chaos.thunder_shard.max_ms_after 95.5 ms",
        "chaos.thunder_shard.writes_read_back 0",
        "chaos.thunder_shard.lost_writes 0",
    ]


def test_every_figure_line_is_name_value_and_an_optional_unit():
    for line in figure_lines(recovered()) + figure_lines(not_recovered()):
        assert re.fullmatch(r"chaos\.[a-z_]+\.[a-z0-9_]+ (\d+(\.\d+)?|nan)( (ms|s))?", line), line


def test_table_aligns_columns_and_says_match_or_mismatch():
    assert table_lines([recovered(), not_recovered()]) == [
        "fault          requests  5xx  other failed  app down  degraded  tail during  tail after  recovery  state   ",
        "thunder_shard  120       0    3             0         7         p99 812 ms   max 96 ms   2.35 s    match   ",
        "full_restart   9         0    0             31        0         max nan ms   max nan ms  nan s     MISMATCH",
    ]


def test_report_prints_every_faults_lines_then_the_table(capsys):
    results = [recovered(), not_recovered()]
    report(results)
    out = capsys.readouterr().out
    assert out == "\n".join(figure_lines(results[0]) + figure_lines(results[1]) + table_lines(results)) + "\n"


def test_say_writes_progress_to_stderr_unless_quiet(capsys):
    say(False, "app healthy")
    say(True, "not shown")
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "chaos: app healthy\n")


def test_the_state_column_says_how_many_acknowledged_writes_were_lost():
    lost = recovered()
    lost.lost_writes, lost.writes_read_back = 3, 57
    assert table_lines([lost])[1].split()[-2:] == ["3", "LOST"]
    assert figure_lines(lost)[-2:] == ["chaos.thunder_shard.writes_read_back 57", "chaos.thunder_shard.lost_writes 3"]
