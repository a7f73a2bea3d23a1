"""DataDir: round trips of every table, write modes, validation, ordering, meta and ground truth."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xserve.schema import ACTIONS, Action, Engagement, Media, MediaKind, Post, ProductSurface, VisibilityLabel
from xserve.storage import (
    EDGES_SCHEMA,
    ENGAGEMENTS_SCHEMA,
    USERS_SCHEMA,
    DataDir,
    DataDirError,
    engagements_to_table,
    posts_to_table,
    table_to_engagements,
    table_to_posts,
)


def make_posts(n: int = 5, start: int = 1) -> list[Post]:
    out = []
    for i in range(start, start + n):
        media = ()
        if i % 3 == 0:
            media = (Media(MediaKind.PHOTO), Media(MediaKind.VIDEO, duration_ms=1_000 * i))
        out.append(
            Post(
                post_id=i,
                author_id=100 + i % 2,
                created_at_ms=1_700_000_000_000 + i,
                text=f"post {i}",
                in_reply_to_post_id=i - 1 if i % 2 == 0 and i > start else None,
                in_reply_to_user_id=100 + (i - 1) % 2 if i % 2 == 0 and i > start else None,
                conversation_id=i - 1 if i % 2 == 0 and i > start else None,
                media=media,
                subscription_only=i % 4 == 0,
                labels=(VisibilityLabel.SPAM,) if i == start else (),
            )
        )
    return out


def make_engagements(n: int = 6) -> list[Engagement]:
    return [
        Engagement(
            user_id=1 + i % 3,
            post_id=10 + i,
            author_id=100,
            action=ACTIONS[i % len(ACTIONS)],
            timestamp_ms=1_700_000_000_000 + (n - i) * 1000,  # written newest first
            dwell_ms=500 * i,
            product_surface=ProductSurface(i % 8),
            post_created_at_ms=None if i % 2 else 1_699_999_000_000,
        )
        for i in range(n)
    ]


def users_table(ids=(1, 2, 3)) -> pa.Table:
    return pa.table(
        {
            "user_id": list(ids),
            "screen_name": [f"u{i}" for i in ids],
            "followers_count": [i * 10 for i in ids],
            "created_at_ms": [1_600_000_000_000 + i for i in ids],
            # issue 17's context columns (the training input of the user token), empty as an import leaves them
            "country_code": [""] * len(ids), "language_code": [""] * len(ids), "client_app_id": [0] * len(ids),
            "topics": [[] for _ in ids],
        }
    )


@pytest.fixture
def dd(tmp_path) -> DataDir:
    return DataDir(tmp_path / "data")


def test_empty_dir_reads_empty_tables_with_schema(dd):
    assert dd.read_posts().num_rows == 0 and dd.read_engagements().schema == ENGAGEMENTS_SCHEMA
    assert dd.read_users(columns=["user_id"]).column_names == ["user_id"]
    assert not dd.has_world() and dd.is_empty()
    assert dd.meta()["counts"] == {"posts": 0, "users": 0, "edges": 0, "engagements": 0}
    assert dd.read_ground_truth() is None


def test_posts_round_trip_through_structs(dd):
    posts = make_posts(7)
    assert dd.write_posts(posts_to_table(posts)) == 7
    back = table_to_posts(DataDir(dd.path).read_posts())  # a fresh handle sees the committed write
    assert back == posts


def test_engagements_round_trip_and_sorted_by_time(dd):
    engagements = make_engagements()
    dd.write_engagements(engagements_to_table(engagements))
    back = table_to_engagements(dd.read_engagements())
    assert back == sorted(engagements, key=lambda e: e.timestamp_ms)
    only = dd.read_engagements(columns=["post_id", "action"])
    assert only.column_names == ["post_id", "action"]
    assert only.column("post_id").to_pylist() == [e.post_id for e in back]


def test_engagement_arrays_encode_actions_as_indices(dd):
    dd.write_engagements(engagements_to_table(make_engagements()))
    arrays = dd.read_engagement_arrays(["user_id", "action", "post_created_at_ms"])
    table = dd.read_engagements()
    assert arrays["action"].dtype == np.int8
    assert [ACTIONS[i].value for i in arrays["action"]] == table.column("action").to_pylist()
    assert np.isnan(arrays["post_created_at_ms"]).sum() == table.column("post_created_at_ms").null_count


def test_users_and_edges_round_trip_and_kind_filter(dd):
    dd.write_users(users_table())
    assert dd.read_users().equals(users_table().cast(USERS_SCHEMA))
    edges = pa.table(
        {"user_id": [1, 1, 2], "target_id": [2, 3, 3], "kind": ["follow", "mute", "follow"], "created_at_ms": [5, 6, 7]}
    )
    dd.write_edges(edges)
    assert dd.read_edges().equals(edges.cast(EDGES_SCHEMA))
    assert dd.read_edges("follow").column("target_id").to_pylist() == [2, 3]
    assert dd.read_edges("block").num_rows == 0


def test_streamed_batches_append_then_overwrite(dd):
    batches = (posts_to_table(make_posts(3, start=s)).to_batches()[0] for s in (1, 4, 7))
    assert dd.write_posts(batches) == 9
    assert dd.write_posts(posts_to_table(make_posts(2, start=50)), mode="overwrite") == 2
    assert dd.read_posts(["post_id"]).column(0).to_pylist() == [50, 51]


def test_upsert_is_idempotent_and_last_row_wins(dd):
    dd.write_users(users_table())
    dup = pa.table({"user_id": [2, 2, 4], "screen_name": ["old", "new", "four"], "followers_count": [0, 1, 2],
                    "created_at_ms": [0, 0, 0]})
    assert dd.write_users(dup, mode="upsert") == 2
    dd.write_users(dup, mode="upsert")
    users = {r["user_id"]: r["screen_name"] for r in dd.read_users().to_pylist()}
    assert users == {1: "u1", 2: "new", 3: "u3", 4: "four"}


def test_insert_new_keeps_existing_rows(dd):
    dd.write_users(users_table())
    minimal = pa.table({"user_id": [3, 9, 9], "created_at_ms": [0, 1, 2]})  # screen_name/followers default
    assert dd.write_users(minimal, mode="insert_new") == 1  # only user 9 is new
    rows = {r["user_id"]: r for r in dd.read_users(["user_id", "screen_name", "followers_count", "created_at_ms"]).to_pylist()}
    assert rows[3]["screen_name"] == "u3" and rows[9] == {"user_id": 9, "screen_name": "", "followers_count": 0,
                                                         "created_at_ms": 1}


def test_engagement_insert_new_dedupes_on_full_key(dd):
    t = engagements_to_table(make_engagements())
    dd.write_engagements(t, mode="insert_new")
    dd.write_engagements(t, mode="insert_new")
    assert dd.count("engagements") == t.num_rows


@pytest.mark.parametrize(
    "write, data, message",
    [
        ("write_users", {"user_id": [1]}, "missing required column 'created_at_ms'"),
        ("write_users", {"user_id": [1], "created_at_ms": [1], "age": [3]}, "unknown column"),
        ("write_users", {"user_id": [None], "created_at_ms": [1]}, "users.user_id: 1 null"),
        ("write_users", {"user_id": ["x"], "created_at_ms": [1]}, "users.user_id: cannot convert"),
        ("write_edges", {"user_id": [1], "target_id": [2], "kind": ["like"], "created_at_ms": [0]}, "edges.kind"),
        ("write_engagements", {"user_id": [1], "post_id": [1], "author_id": [1], "action": ["love"],
                               "timestamp_ms": [0]}, "engagements.action: 'love'"),
        ("write_posts", 42, "cannot write int"),
    ],
)
def test_bad_writes_name_the_column_and_write_nothing(dd, write, data, message):
    with pytest.raises(DataDirError, match=message):
        getattr(dd, write)(data)
    assert dd.is_empty()


def test_bad_mode_and_kind(dd):
    with pytest.raises(DataDirError, match="write mode"):
        dd.write_users(users_table(), mode="merge")
    with pytest.raises(DataDirError, match="edge kind"):
        dd.read_edges("like")
    with pytest.raises(DataDirError, match="unknown column"):
        dd.read_posts(["nope"])


def test_meta_ground_truth_and_clear(dd):
    dd.write_posts(posts_to_table(make_posts(2)))
    dd.write_engagements(engagements_to_table(make_engagements(2)))
    meta = dd.update_meta(world={"name": "synthetic", "seed": 3})
    assert meta["world"]["seed"] == 3 and meta["counts"]["posts"] == 2 and dd.has_world()
    dd.write_ground_truth({"user_interests": np.eye(3, dtype=np.float32)})
    assert np.array_equal(DataDir(dd.path).read_ground_truth()["user_interests"], np.eye(3))
    dd.clear()
    assert dd.is_empty() and "world" not in dd.meta() and dd.read_ground_truth() is None


def test_not_a_directory(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(DataDirError, match="not a directory"):
        DataDir(f)
    with pytest.raises(DataDirError, match="does not exist"):
        DataDir(tmp_path / "missing", create=False)


_engagement = st.builds(
    Engagement,
    user_id=st.integers(1, 2**63 - 1),
    post_id=st.integers(1, 2**63 - 1),
    author_id=st.integers(1, 2**63 - 1),
    action=st.sampled_from(list(Action)),
    timestamp_ms=st.integers(0, 2**62),
    dwell_ms=st.integers(0, 10**9),
    product_surface=st.sampled_from(list(ProductSurface)),
    post_created_at_ms=st.none() | st.integers(0, 2**62),
)


@settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_engagement, max_size=20))
def test_any_engagements_round_trip(tmp_path_factory, engagements):
    dd = DataDir(tmp_path_factory.mktemp("d"))
    dd.write_engagements(engagements_to_table(engagements))
    assert table_to_engagements(dd.read_engagements()) == sorted(engagements, key=lambda e: e.timestamp_ms)


_user_batch = st.lists(st.tuples(st.integers(1, 8), st.text("ab", max_size=2)), max_size=6)


@settings(max_examples=10)
@given(st.lists(st.tuples(st.sampled_from(["upsert", "insert_new", "append"]), _user_batch), max_size=4))
def test_merge_writes_match_a_dict_model(tmp_path_factory, writes):
    """Oracle: upsert = dict update (last row per key wins), insert_new = setdefault (first wins)."""
    dd = DataDir(tmp_path_factory.mktemp("d"), fsync=False)
    model: list[tuple[int, str]] = []  # rows in the table, as (user_id, screen_name)
    for mode, rows in writes:
        batch = pa.table({"user_id": pa.array([r[0] for r in rows], pa.int64()),
                          "screen_name": pa.array([r[1] for r in rows], pa.string()),
                          "created_at_ms": pa.array([0] * len(rows), pa.int64())})
        dd.write_users(batch, mode=mode)
        if mode == "append":
            model += rows
            continue
        present = {u for u, _ in model}
        latest: dict[int, str] = {}
        for u, name in rows:
            if mode == "upsert" or u not in latest:
                latest[u] = name
        if mode == "upsert":
            model = [(u, latest.get(u, name)) for u, name in model]
        model += [(u, name) for u, name in latest.items() if u not in present]
    got = sorted(zip(*dd.read_users(["user_id", "screen_name"]).to_pydict().values()))
    assert got == sorted(model)
