"""What a chaos run prints: one ``chaos.<fault>.<figure> value [unit]`` line per figure and a table on stdout,
progress lines on stderr."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from scripts.chaoslib.results import Result

__all__ = ["figure_lines", "report", "say", "state_cell", "table_lines"]


def say(quiet: bool, msg: str) -> None:
    """A progress line on stderr, unless ``quiet``."""
    if not quiet:
        print(f"chaos: {msg}", file=sys.stderr, flush=True)


def figure_lines(r: Result) -> list[str]:
    """The grep-able lines of one fault: the five headline figures first, then the rest."""
    f = r.fault
    return [
        f"chaos.{f}.requests {r.requests}",
        f"chaos.{f}.errors_5xx {r.errors_5xx}",
        f"chaos.{f}.p99_ms_during {r.p99_ms_during:.1f} ms",
        f"chaos.{f}.recovery_s {r.recovery_s:.2f} s",
        f"chaos.{f}.state_match {r.state_match}",
        f"chaos.{f}.errors_4xx {r.errors_4xx}",
        f"chaos.{f}.conn_errors {r.conn_errors}",
        f"chaos.{f}.down_errors {r.down_errors}",
        f"chaos.{f}.degraded_during {r.degraded_during}",
        f"chaos.{f}.p99_ms_during_feed {r.p99_ms_during_feed:.1f} ms",
        f"chaos.{f}.p99_ms_after {r.p99_ms_after:.1f} ms",
        f"chaos.{f}.writes_read_back {r.writes_read_back}",
        f"chaos.{f}.lost_writes {r.lost_writes}",
    ]


def table_lines(results: Sequence[Result]) -> list[str]:
    """A header and one row per fault, each column as wide as its widest cell."""
    head = ("fault", "requests", "5xx", "other failed", "app down", "degraded", "p99 during", "p99 after", "recovery",
            "state")
    rows = [(r.fault, str(r.requests), str(r.errors_5xx), str(r.errors_4xx + r.conn_errors), str(r.down_errors),
             str(r.degraded_during),
             f"{r.p99_ms_during:.0f} ms", f"{r.p99_ms_after:.0f} ms", f"{r.recovery_s:.2f} s",
             state_cell(r)) for r in results]
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    return ["  ".join(x.ljust(w) for x, w in zip(row, widths)) for row in (head, *rows)]


def state_cell(r: Result) -> str:
    """``match``, ``MISMATCH``, or how many acknowledged writes were lost (the worse)."""
    if r.lost_writes:
        return f"{r.lost_writes} LOST"
    return "match" if r.state_match else "MISMATCH"


def report(results: Sequence[Result]) -> None:
    """Every fault's figure lines, then the table, on stdout."""
    for r in results:
        print("\n".join(figure_lines(r)))
    print("\n".join(table_lines(results)))
