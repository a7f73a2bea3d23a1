"""What a chaos run prints: one ``chaos.<fault>.<figure> value [unit]`` line per figure and a table on stdout,
progress lines on stderr."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from scripts.chaoslib.results import Result
from scripts.figures import tail

__all__ = ["figure_lines", "report", "say", "state_cell", "table_lines"]


def say(quiet: bool, msg: str) -> None:
    """A progress line on stderr, unless ``quiet``."""
    if not quiet:
        print(f"chaos: {msg}", file=sys.stderr, flush=True)


def figure_lines(r: Result) -> list[str]:
    """The grep-able lines of one fault: the five headline figures first, then the rest. A window's latency
    tail is its p99 over 1,000 answered requests or more, else its maximum, named so (``max_ms_during``)."""
    f = r.fault

    def tail_line(name: str, ms: list[float]) -> str:
        name, value = tail(f"chaos.{f}.{name}", ms)
        return f"{name} {value:.1f} ms"

    return [
        f"chaos.{f}.requests {r.requests}",
        f"chaos.{f}.errors_5xx {r.errors_5xx}",
        tail_line("p99_ms_during", r.ms_during),
        f"chaos.{f}.recovery_s {r.recovery_s:.2f} s",
        f"chaos.{f}.state_match {r.state_match}",
        f"chaos.{f}.errors_4xx {r.errors_4xx}",
        f"chaos.{f}.conn_errors {r.conn_errors}",
        f"chaos.{f}.down_errors {r.down_errors}",
        f"chaos.{f}.degraded_during {r.degraded_during}",
        tail_line("p99_ms_during_feed", r.ms_during_feed),
        tail_line("p99_ms_after", r.ms_after),
        f"chaos.{f}.writes_read_back {r.writes_read_back}",
        f"chaos.{f}.lost_writes {r.lost_writes}",
    ]


def table_lines(results: Sequence[Result]) -> list[str]:
    """A header and one row per fault, each column as wide as its widest cell."""
    head = ("fault", "requests", "5xx", "other failed", "app down", "degraded", "tail during", "tail after", "recovery",
            "state")
    rows = [(r.fault, str(r.requests), str(r.errors_5xx), str(r.errors_4xx + r.conn_errors), str(r.down_errors),
             str(r.degraded_during),
             tail_cell(r.ms_during), tail_cell(r.ms_after), f"{r.recovery_s:.2f} s",
             state_cell(r)) for r in results]
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    return ["  ".join(x.ljust(w) for x, w in zip(row, widths)) for row in (head, *rows)]


def tail_cell(ms: list[float]) -> str:
    """A window's latency tail for the table: ``p99 812 ms``, or ``max 812 ms`` below 1,000 requests."""
    name, value = tail("p99", ms)
    return f"{name} {value:.0f} ms"


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
