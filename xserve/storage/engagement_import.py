"""Import an engagement log (CSV or Parquet) into a data directory, row by row validated.

The format is documented in README.md, "Engagement log format". Columns:

=================  ========  ==================================================
column             required  rule
=================  ========  ==================================================
user_id            yes       integer in [1, 2**63-1]
post_id            yes       integer in [1, 2**63-1]
author_id          yes       integer in [1, 2**63-1]; one author per post
action             yes       an ``xserve.schema.Action`` value, e.g. ``favorite``
timestamp          yes       integer ms since epoch in [1970-01-01 (exclusive), now + 1 day]
post_created_at    no        integer ms, in range and not after ``timestamp``
dwell_ms           no        integer in [0, 1 day]; empty = 0
product_surface    no        ``ProductSurface`` value (0-7) or name; empty = home_for_you
=================  ========  ==================================================

Checks are vectorised over the whole file; each rejected row is counted under
the first rule it breaks (:data:`REASONS` order). Any time after the Unix epoch is
accepted (older research logs predate any one platform), so a log written in
seconds rather than milliseconds would pass row by row as January 1970: one
check over the whole file (:func:`seconds_warning`) warns when the file's
median timestamp reads as milliseconds before 1973 but as seconds falls in
range; the rows are still imported as written. Accepted rows are appended to
the engagements table with ``insert_new`` on ``(user_id, post_id, action,
timestamp_ms)``, so importing a file twice adds nothing the second time; posts
and users the directory does not know get minimal rows (``insert_new``: real
rows are never overwritten) so training works on an imported log alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from xserve import clock
from xserve.clock import DAY_MS
from xserve.schema import ACTIONS, ProductSurface
from xserve.storage.lance.tables import ENGAGEMENTS_SCHEMA, DataDir, DataDirError

__all__ = ["REASONS", "REQUIRED_COLUMNS", "OPTIONAL_COLUMNS", "ImportReport", "LogFormatError", "import_log",
           "read_log", "seconds_warning", "validate_log"]

REQUIRED_COLUMNS = ("user_id", "post_id", "author_id", "action", "timestamp")
OPTIONAL_COLUMNS = ("post_created_at", "dwell_ms", "product_surface")
MIN_TIMESTAMP_MS = 1  # any time after the Unix epoch (0 means "unknown" to training); older logs are welcome
SECONDS_LIKE_BELOW_MS = 100_000_000_000  # 1973-03-03 in ms; a median below it is probably seconds (2001-09-09 as s)
MAX_FUTURE_MS = DAY_MS  # timestamps may run up to a day ahead of the importer's clock
MAX_DWELL_MS = DAY_MS
MAX_ID = 2**63 - 1
EXAMPLES_PER_REASON = 5

# Every rejection reason, in the order rows are checked (a row counts under its first failure).
REASONS: dict[str, str] = {
    "bad_user_id": "user_id missing or not an integer in [1, 2^63-1]",
    "bad_post_id": "post_id missing or not an integer in [1, 2^63-1]",
    "bad_author_id": "author_id missing or not an integer in [1, 2^63-1]",
    "unknown_action": "action missing or not an Action name",
    "bad_timestamp": "timestamp missing or not an integer (ms since epoch)",
    "timestamp_out_of_range": "timestamp not after the Unix epoch or more than a day in the future",
    "bad_post_created_at": "post_created_at not an integer in range",
    "post_created_after_engagement": "post_created_at later than timestamp",
    "bad_dwell_ms": "dwell_ms not an integer in [0, 86400000]",
    "bad_product_surface": "product_surface not a ProductSurface value (0-7) or name",
    "author_conflict": "post_id already has another author_id (earlier in the file or in the data directory)",
    "duplicate_row": "same user_id, post_id, action and timestamp as an earlier row",
}

_ACTION_NAMES = pa.array([a.value for a in ACTIONS])
_SURFACE_NAMES = pa.array([s.name.lower() for s in ProductSurface])


class LogFormatError(DataDirError):
    """The file cannot be imported at all (missing, unreadable, a required column absent)."""


@dataclass
class ImportReport:
    """What one import did. Row numbers are 1-based data rows (the first row after a CSV header is 1)."""

    path: str
    rows_read: int = 0
    accepted: int = 0
    inserted: int = 0  # accepted rows that were not already in the engagements table
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> rows
    examples: dict[str, list[int]] = field(default_factory=dict)  # reason -> first row numbers
    new_posts: int = 0
    new_users: int = 0
    ignored_columns: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # whole-file checks (rows are still imported)
    seconds: float = 0.0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line."""
        out = [f"read {self.rows_read} rows from {self.path} in {self.seconds:.1f} s"]
        if self.ignored_columns:
            out.append(f"ignored unknown columns: {', '.join(self.ignored_columns)}")
        out.append(f"accepted {self.accepted} rows ({self.inserted} new, {self.accepted - self.inserted} already "
                   f"present); rejected {self.rejected_total}")
        for reason, n in self.rejected.items():
            rows = ", ".join(map(str, self.examples[reason])) + (", ..." if n > len(self.examples[reason]) else "")
            out.append(f"  {reason}: {n} (rows {rows}): {REASONS[reason]}")
        out += [f"warning: {w}" for w in self.warnings]
        out.append(f"created {self.new_posts} posts and {self.new_users} users the data directory did not know")
        return out

    def to_dict(self) -> dict:
        return {"path": self.path, "rows_read": self.rows_read, "accepted": self.accepted, "inserted": self.inserted,
                "rejected": dict(self.rejected), "examples": {k: list(v) for k, v in self.examples.items()},
                "new_posts": self.new_posts, "new_users": self.new_users, "warnings": list(self.warnings)}


# --------------------------------------------------------------------------- reading


def read_log(path: str | Path) -> pa.Table:
    """Read a CSV (every column as text, so one bad cell rejects a row, not the file) or Parquet file."""
    path = Path(path)
    if not path.is_file():
        raise LogFormatError(f"engagement log {path} does not exist or is not a file")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
        if magic == b"PAR1" or path.suffix in (".parquet", ".pq"):
            table = pq.read_table(path)
        else:  # compression (.gz, .bz2, ...) is detected from the extension; a UTF-8 BOM is skipped
            text_columns = {name: pa.string() for name in REQUIRED_COLUMNS + OPTIONAL_COLUMNS}
            table = pa_csv.read_csv(
                path, convert_options=pa_csv.ConvertOptions(column_types=text_columns, strings_can_be_null=True)
            )
    except (OSError, pa.ArrowException, UnicodeDecodeError) as exc:
        raise LogFormatError(f"cannot read engagement log {path}: {str(exc).splitlines()[0]}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise LogFormatError(f"engagement log {path} lacks required column(s) {missing}; it has {table.column_names}")
    return table


# --------------------------------------------------------------------------- parsing columns


def _parse_int(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values int64 with 0 where invalid, valid mask, null mask) of an int, float or text column."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(col)
    null = col.is_null().to_numpy(zero_copy_only=False)
    t = col.type
    if pa.types.is_dictionary(t):
        col = col.cast(t.value_type)
        t = col.type
    if pa.types.is_integer(t):
        if pa.types.is_unsigned_integer(t):
            big = pc.fill_null(pc.greater(col, MAX_ID), False).to_numpy(zero_copy_only=False)
            col = pc.if_else(pc.greater(col, MAX_ID), 0, col)
        else:
            big = np.zeros(n, dtype=bool)
        values = pc.fill_null(col.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
        return values, ~null & ~big, null
    if pa.types.is_floating(t):
        f = pc.fill_null(col, 0.0).to_numpy(zero_copy_only=False).astype(np.float64)
        ok = ~null & np.isfinite(f) & (f == np.floor(f)) & (np.abs(f) < 2**63)
        return np.where(ok, f, 0).astype(np.int64), ok, null
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        text = pc.utf8_trim_whitespace(col.cast(pa.string()))
        null |= pc.fill_null(pc.equal(text, ""), True).to_numpy(zero_copy_only=False)
        ok = pc.fill_null(pc.match_substring_regex(text, r"^[+-]?[0-9]{1,19}$"), False).to_numpy(zero_copy_only=False)
        cleaned = pc.if_else(pa.array(ok), text, "0")
        try:
            values = cleaned.cast(pa.int64()).to_numpy(zero_copy_only=False)
        except pa.ArrowInvalid:  # a 19-digit value beyond int64: parse those rows one by one
            py = [int(v) if flag else 0 for v, flag in zip(cleaned.to_pylist(), ok)]
            fits = np.array([-(2**63) <= v <= MAX_ID for v in py])
            ok &= fits
            values = np.array([v if f else 0 for v, f in zip(py, fits)], dtype=np.int64)
        return values, ok & ~null, null
    return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool), null


def _parse_text(col: pa.ChunkedArray) -> pa.Array:
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    return pc.utf8_lower(pc.utf8_trim_whitespace(col.cast(pa.string())))


def _parse_surface(col: pa.ChunkedArray | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(ProductSurface ints, valid mask); absent or empty cells mean HOME_FOR_YOU."""
    default = int(ProductSurface.HOME_FOR_YOU)
    if col is None:
        return np.full(n, default, dtype=np.int32), np.ones(n, dtype=bool)
    values, ok, null = _parse_int(col)
    ok &= (values >= 0) & (values < len(ProductSurface))
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        by_name = pc.index_in(_parse_text(col), _SURFACE_NAMES).to_numpy(zero_copy_only=False)
        named = ~np.isnan(by_name.astype(np.float64))
        values = np.where(named, np.nan_to_num(by_name.astype(np.float64)).astype(np.int64), values)
        ok |= named
        null &= ~named
    return np.where(null, default, values).astype(np.int32), ok | null


# --------------------------------------------------------------------------- validation


def validate_log(table: pa.Table, now_ms: int, known_authors: pa.Table | None = None) -> tuple[pa.Table, dict]:
    """Check every row; returns (accepted rows as an ENGAGEMENTS_SCHEMA table, {reason: row indices (0-based)}).

    ``known_authors`` (columns post_id, author_id) are posts already stored: a row whose post has another
    author there is an ``author_conflict``.
    """
    n = table.num_rows
    failures: dict[str, np.ndarray] = {}
    alive = np.ones(n, dtype=bool)

    def reject(reason: str, bad: np.ndarray) -> None:
        nonlocal alive
        hit = bad & alive
        if hit.any():
            failures[reason] = np.flatnonzero(hit)
            alive &= ~hit

    ids = {}
    for name in ("user_id", "post_id", "author_id"):
        values, ok, _ = _parse_int(table.column(name))
        reject(f"bad_{name}", ~(ok & (values >= 1)))
        ids[name] = values
    action = _parse_text(table.column("action"))
    action_code = pc.index_in(action, _ACTION_NAMES).to_numpy(zero_copy_only=False).astype(np.float64)
    reject("unknown_action", np.isnan(action_code))
    ts, ok, _ = _parse_int(table.column("timestamp"))
    reject("bad_timestamp", ~ok)
    reject("timestamp_out_of_range", (ts < MIN_TIMESTAMP_MS) | (ts > now_ms + MAX_FUTURE_MS))
    if "post_created_at" in table.column_names:
        created, ok, null = _parse_int(table.column("post_created_at"))
        reject("bad_post_created_at", ~null & (~ok | (created < MIN_TIMESTAMP_MS) | (created > now_ms + MAX_FUTURE_MS)))
        reject("post_created_after_engagement", ~null & (created > ts))
    else:
        created, null = np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool)
    if "dwell_ms" in table.column_names:
        dwell, ok, dwell_null = _parse_int(table.column("dwell_ms"))
        reject("bad_dwell_ms", ~dwell_null & (~ok | (dwell < 0) | (dwell > MAX_DWELL_MS)))
        dwell = np.where(dwell_null, 0, dwell)
    else:
        dwell = np.zeros(n, dtype=np.int64)
    names = table.column_names
    surface, ok = _parse_surface(table.column("product_surface") if "product_surface" in names else None, n)
    reject("bad_product_surface", ~ok)

    # One author per post: the stored one if any, else the first row's in this file.
    post, author = ids["post_id"], ids["author_id"]
    expected = np.zeros(n, dtype=np.int64)
    if known_authors is not None and known_authors.num_rows:
        at = pc.index_in(pa.array(post), known_authors.column("post_id")).to_numpy(zero_copy_only=False)
        known = ~np.isnan(at.astype(np.float64))
        stored = known_authors.column("author_id").to_numpy()
        expected[known] = stored[np.nan_to_num(at[known].astype(np.float64)).astype(np.int64)]
    live = np.flatnonzero(alive)
    if len(live):
        _, first, inverse = np.unique(post[live], return_index=True, return_inverse=True)
        first_author = author[live][first][inverse]  # (len(live),) the first live row's author of each post
        fill = expected[live] == 0
        expected[live[fill]] = first_author[fill]
    reject("author_conflict", alive & (expected != author))

    # Exact duplicates (same user, post, action, timestamp): the first one counts.
    live = np.flatnonzero(alive)
    if len(live):
        keys = np.stack([ids["user_id"][live], post[live], action_code[live].astype(np.int64), ts[live]], axis=1)
        _, first = np.unique(keys, axis=0, return_index=True)
        dup = np.ones(len(live), dtype=bool)
        dup[first] = False
        bad = np.zeros(n, dtype=bool)
        bad[live[dup]] = True
        reject("duplicate_row", bad)

    keep = np.flatnonzero(alive)
    accepted = pa.table(
        {
            "user_id": ids["user_id"][keep],
            "post_id": post[keep],
            "author_id": author[keep],
            "action": pc.take(action, pa.array(keep)),
            "timestamp_ms": ts[keep],
            "dwell_ms": dwell[keep],
            "product_surface": surface[keep],
            "post_created_at_ms": pa.array(created[keep], mask=null[keep]),
            "prediction_request_id": pa.nulls(len(keep), pa.string()),  # imported: served by no feed of ours
        },
        schema=ENGAGEMENTS_SCHEMA,
    )
    return accepted, {r: failures[r] for r in REASONS if r in failures}


def seconds_warning(timestamps_ms: np.ndarray, now_ms: int) -> str | None:
    """One check over the whole file: a warning when its timestamps look like seconds, not milliseconds.

    Since any time after the epoch is accepted, a seconds log passes row by row as January 1970. Its median
    gives it away: before 1973-03-03 read as ms, yet in range read as seconds (1973 to now + 1 day).
    """
    if len(timestamps_ms) == 0:
        return None
    median = int(np.median(timestamps_ms))
    if median >= SECONDS_LIKE_BELOW_MS or not SECONDS_LIKE_BELOW_MS <= median * 1000 <= now_ms + MAX_FUTURE_MS:
        return None
    as_ms = time.strftime("%Y-%m-%d", time.gmtime(median / 1000))
    as_s = time.strftime("%Y-%m-%d", time.gmtime(median))
    return (f"timestamps look like seconds, not milliseconds: the median {median} is {as_ms} in ms but {as_s} "
            "in seconds; imported as written (multiply the timestamp column by 1000 and import again)")


# --------------------------------------------------------------------------- the import


def _minimal_posts(eng: pa.Table) -> pa.Table:
    """One row per post: author, and creation = the given post_created_at, else its earliest engagement."""
    created = pc.if_else(pc.is_null(eng.column("post_created_at_ms")), eng.column("timestamp_ms"),
                         eng.column("post_created_at_ms"))
    t = pa.table({"post_id": eng.column("post_id"), "author_id": eng.column("author_id"), "created_at_ms": created})
    return t.group_by(["post_id", "author_id"], use_threads=False).aggregate([("created_at_ms", "min")]).rename_columns(
        ["post_id", "author_id", "created_at_ms"])


def _minimal_users(eng: pa.Table, posts: pa.Table) -> pa.Table:
    """One row per user or author id seen; created at their first appearance."""
    t = pa.concat_tables([
        pa.table({"user_id": eng.column("user_id"), "created_at_ms": eng.column("timestamp_ms")}),
        pa.table({"user_id": posts.column("author_id"), "created_at_ms": posts.column("created_at_ms")}),
    ])
    return t.group_by("user_id", use_threads=False).aggregate([("created_at_ms", "min")]).rename_columns(
        ["user_id", "created_at_ms"])


def import_log(
    data_dir: DataDir, path: str | Path, now_ms: int | None = None, table: pa.Table | None = None
) -> ImportReport:
    """Validate the log at ``path`` (or ``table``, already read from it by :func:`read_log`) and add its
    accepted rows to ``data_dir`` (see the module docstring)."""
    started = time.perf_counter()
    now_ms = clock.now_ms() if now_ms is None else now_ms
    table = read_log(path) if table is None else table
    report = ImportReport(path=str(path), rows_read=table.num_rows)
    report.ignored_columns = [c for c in table.column_names if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    known = data_dir.read_posts(["post_id", "author_id"])
    accepted, failures = validate_log(table, now_ms, known)
    report.accepted = accepted.num_rows
    report.rejected = {r: len(rows) for r, rows in failures.items()}
    report.examples = {r: (rows[:EXAMPLES_PER_REASON] + 1).tolist() for r, rows in failures.items()}
    warning = seconds_warning(accepted.column("timestamp_ms").to_numpy(), now_ms)
    report.warnings = [warning] if warning else []
    if accepted.num_rows:
        posts = _minimal_posts(accepted)
        # Posts and users first: an interrupted import re-run completes them, never leaves dangling engagements.
        report.new_posts = data_dir.write_posts(posts, mode="insert_new")
        report.new_users = data_dir.write_users(_minimal_users(accepted, posts), mode="insert_new")
        # Rows are unique within the file (duplicate_row), so a first import can skip the merge's join.
        mode = "append" if data_dir.count("engagements") == 0 else "insert_new"
        report.inserted = data_dir.write_engagements(accepted, mode=mode)
    report.seconds = time.perf_counter() - started
    imports = data_dir.meta().get("imports", [])
    data_dir.update_meta(imports=[*imports, {**report.to_dict(), "at_ms": now_ms}])
    return report
