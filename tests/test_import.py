"""Engagement-log import: good CSV and Parquet, every rejection reason counted, idempotence, CLI exit codes."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xserve.storage import DataDir, posts_to_table
from xserve.storage.engagement_import import LogFormatError, import_log, read_log, validate_log
from xserve.schema import Post

NOW = 1_790_000_000_000
T = NOW - 3_600_000  # a valid engagement time
HEADER = "user_id,post_id,author_id,action,timestamp,post_created_at,dwell_ms,product_surface"


def write_csv(path, rows, header=HEADER):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


GOOD_ROWS = [
    f"1,100,7,favorite,{T},{T - 1000},,",
    f"1,100,7,dwell,{T + 5},{T - 1000},2500,home_for_you",  # same (user, post), another action
    f"2,100,7,click,{T + 9},,,3",
    f"2,101,8,not_interested,{T + 12},, ,explore",
    f"3,102,7, Report ,{T + 20},,0,HOME_FOLLOWING",
]


def test_good_csv_is_imported_with_minimal_posts_and_users(tmp_path):
    dd = DataDir(tmp_path / "d")
    report = import_log(dd, write_csv(tmp_path / "log.csv", GOOD_ROWS), now_ms=NOW)
    assert (report.rows_read, report.accepted, report.inserted, report.rejected) == (5, 5, 5, {})
    eng = dd.read_engagements().to_pylist()
    assert [e["action"] for e in eng] == ["favorite", "dwell", "click", "not_interested", "report"]
    assert [e["product_surface"] for e in eng] == [1, 1, 3, 7, 2]
    assert [e["dwell_ms"] for e in eng] == [0, 2500, 0, 0, 0]
    assert [e["post_created_at_ms"] for e in eng] == [T - 1000, T - 1000, None, None, None]
    posts = {p["post_id"]: p for p in dd.read_posts().to_pylist()}
    assert posts[100]["author_id"] == 7 and posts[100]["created_at_ms"] == T - 1000
    assert posts[101]["created_at_ms"] == T + 12  # no post_created_at: its first engagement
    assert sorted(dd.read_users().column("user_id").to_pylist()) == [1, 2, 3, 7, 8]
    assert (report.new_posts, report.new_users) == (3, 5) and dd.has_world()
    again = import_log(dd, tmp_path / "log.csv", now_ms=NOW)
    assert (again.accepted, again.inserted, again.new_posts, dd.count("engagements")) == (5, 0, 0, 5)
    assert len(dd.meta()["imports"]) == 2


def test_typed_parquet_is_imported(tmp_path):
    table = pa.table({
        "user_id": pa.array([1, 2, 3], pa.uint32()),
        "post_id": pa.array([100, 100, 101], pa.int64()),
        "author_id": pa.array([7.0, 7.0, 9.0]),  # integral floats are fine
        "action": pa.array(["favorite", "reply", "repost"]).dictionary_encode(),
        "timestamp": pa.array([T, T + 1, T + 2], pa.int64()),
        "product_surface": pa.array([1, None, 5], pa.int8()),
        "note": ["x", "y", "z"],
    })
    pq.write_table(table, tmp_path / "log.parquet")
    dd = DataDir(tmp_path / "d")
    report = import_log(dd, tmp_path / "log.parquet", now_ms=NOW)
    assert report.accepted == 3 and report.ignored_columns == ["note"]
    assert dd.read_engagements(["action", "product_surface"]).to_pydict() == {
        "action": ["favorite", "reply", "repost"], "product_surface": [1, 1, 5]}


BAD_ROWS = {  # reason -> rows breaking exactly that rule first
    "bad_user_id": [f"0,100,7,favorite,{T},,,", f"x,100,7,favorite,{T},,,", f",100,7,favorite,{T},,,"],
    "bad_post_id": [f"1,-5,7,favorite,{T},,,", f"1,99999999999999999999,7,favorite,{T},,,"],
    "bad_author_id": [f"1,100,1.5,favorite,{T},,,"],
    "unknown_action": [f"1,100,7,love,{T},,,", "1,100,7,,1,,,"],
    "bad_timestamp": ["1,100,7,favorite,soon,,,", "1,100,7,favorite,,,,"],
    "timestamp_out_of_range": ["1,100,7,favorite,-1000,,,", f"1,100,7,favorite,{NOW + 3 * 86_400_000},,,"],
    "bad_post_created_at": [f"1,100,7,favorite,{T},yesterday,,"],
    "post_created_after_engagement": [f"1,100,7,favorite,{T},{T + 1},,"],
    "bad_dwell_ms": [f"1,100,7,dwell,{T},,-3,", f"1,100,7,dwell,{T},,1e3,"],
    "bad_product_surface": [f"1,100,7,favorite,{T},,,8", f"1,100,7,favorite,{T},,,timeline"],
    "author_conflict": [f"5,100,8,favorite,{T},,,", f"5,555,9,favorite,{T},,,"],  # 555 is stored with author 4
    "duplicate_row": [GOOD_ROWS[0]],
}


def test_bad_rows_are_counted_per_reason_with_row_numbers(tmp_path):
    dd = DataDir(tmp_path / "d")
    dd.write_posts(posts_to_table([Post(post_id=555, author_id=4, created_at_ms=T - 10)]))
    rows, expected_rows = list(GOOD_ROWS), {}
    for reason, bad in BAD_ROWS.items():
        expected_rows[reason] = list(range(len(rows) + 1, len(rows) + len(bad) + 1))
        rows += bad
    report = import_log(dd, write_csv(tmp_path / "log.csv", rows), now_ms=NOW)
    assert report.rejected == {r: len(b) for r, b in BAD_ROWS.items()}
    assert report.examples == expected_rows
    assert report.accepted == len(GOOD_ROWS) == dd.count("engagements")
    assert dd.read_posts(["post_id", "author_id"]).to_pylist()[0] == {"post_id": 555, "author_id": 4}
    text = "\n".join(report.lines())
    assert "duplicate_row: 1 (rows" in text and f"rejected {sum(map(len, BAD_ROWS.values()))}" in text


def test_times_before_2006_are_accepted_and_a_seconds_file_is_warned_about_once(tmp_path):
    """Any time after the epoch imports (a 1997 research log); one warning for a whole file in seconds."""
    y1997 = 867_000_000_000  # 1997-06-22 in ms
    old = [f"{u},{200 + u},7,favorite,{y1997 + u},{y1997 - 1000},," for u in range(1, 4)]
    report = import_log(DataDir(tmp_path / "old"), write_csv(tmp_path / "old.csv", old), now_ms=NOW)
    assert (report.accepted, report.rejected, report.warnings) == (3, {}, [])
    in_seconds = [f"{u},{200 + u},7,favorite,{y1997 // 1000 + u},,," for u in range(1, 4)]
    report = import_log(DataDir(tmp_path / "s"), write_csv(tmp_path / "s.csv", in_seconds), now_ms=NOW)
    assert report.accepted == 3 and len(report.warnings) == 1  # one check over the file, not one per row
    assert "look like seconds" in report.warnings[0] and "1997-06-22 in seconds" in report.warnings[0]
    assert sum("warning: " in line for line in report.lines()) == 1


@pytest.mark.parametrize(
    "content, message",
    [("user_id,post_id,action,timestamp\n1,2,favorite,3\n", "lacks required column(s) ['author_id']"),
     (None, "does not exist")],
)
def test_unusable_files_raise(tmp_path, content, message):
    path = tmp_path / "log.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(LogFormatError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        read_log(path)


def test_cli_import_prints_counts_and_exits_2_on_bad_files(tmp_path):
    log = write_csv(tmp_path / "log.csv", [*GOOD_ROWS, "0,1,1,favorite,1,,,"])
    run = lambda *a: subprocess.run([sys.executable, "-m", "xserve", "import", *a],  # noqa: E731
                                    capture_output=True, text=True)
    ok = run("--input", str(log), "--data-dir", str(tmp_path / "d"))
    assert ok.returncode == 0, ok.stderr
    assert "accepted 5 rows" in ok.stdout and "bad_user_id: 1 (rows 6)" in ok.stdout
    r = run("--input", str(tmp_path / "missing.csv"), "--data-dir", str(tmp_path / "d"))  # (bad columns: above)
    assert r.returncode == 2 and r.stderr.startswith("xserve: error: ") and r.stderr.count("\n") == 1
    assert "missing.csv does not exist" in r.stderr and "Traceback" not in r.stderr


_valid_row = st.fixed_dictionaries({
    "user_id": st.integers(1, 50), "post_id": st.integers(1, 20), "action": st.sampled_from(["favorite", "click"]),
    "timestamp": st.integers(T - 10**9, T),
})


@settings(max_examples=40)
@given(st.lists(_valid_row, max_size=30), st.lists(st.sampled_from(list(BAD_ROWS)[:6]), max_size=10))
def test_accepted_plus_rejected_is_everything(rows, defects):
    """Valid rows (author = post_id % 3 + 1, so never conflicting) survive; each injected defect is counted."""
    table = {k: [str(r[k]) for r in rows] for k in ("user_id", "post_id", "action", "timestamp")}
    table["author_id"] = [str(r["post_id"] % 3 + 1) for r in rows]
    for reason in defects:
        bad = BAD_ROWS[reason][0].split(",")
        for k, v in zip(("user_id", "post_id", "author_id", "action", "timestamp"), bad):
            table[k].append(v)
    accepted, failures = validate_log(pa.table({k: pa.array(v, pa.string()) for k, v in table.items()}), NOW)
    unique = len({(r["user_id"], r["post_id"], r["action"], r["timestamp"]) for r in rows})
    assert accepted.num_rows == unique
    counted = {r: len(i) for r, i in failures.items() if r != "duplicate_row"}
    assert counted == {r: defects.count(r) for r in set(defects)}
    assert accepted.num_rows + sum(len(i) for i in failures.values()) == len(rows) + len(defects)


def test_gzipped_csv_with_bom_is_read(tmp_path):
    import gzip

    path = tmp_path / "log.csv.gz"
    path.write_bytes(gzip.compress(("\ufeff" + HEADER + "\n" + "\n".join(GOOD_ROWS) + "\n").encode()))
    table = read_log(path)
    assert table.num_rows == 5 and table.column("user_id").type == pa.string()
