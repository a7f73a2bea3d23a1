"""No request value reaches a LanceDB filter string or a path unless it is an int or an allow-listed name.

Every filter string in ``xserve/storage`` is built from ``int(...)`` of each
id (``post_id IN (...)``, ``created_at_ms >= ...``) or from an allow-listed
edge kind; embedding version names (the only names that become paths) match a
strict pattern. Hostile values are refused before any query runs.
"""

from __future__ import annotations

import numpy as np
import pytest

from xserve.storage import DataDir, DataDirError
from xserve.storage.lance.embeddings import EmbeddingVersions, VersionError, _ids_sql
from xserve.storage.lance.post_lookup import PostTableLookup
from xserve.storage.lance.tables import posts_to_table
from tests.storage.test_tables import make_posts

HOSTILE = ["1) OR (1=1", "1; DROP TABLE posts", "' OR '1'='1", "../../etc/passwd", "1 OR 1=1", "0x10"]


@pytest.fixture
def data_dir(tmp_path):
    dd = DataDir(tmp_path, fsync=False)
    dd.write_posts(posts_to_table(make_posts(5)))
    return tmp_path


@pytest.mark.parametrize("value", HOSTILE)
def test_post_lookup_refuses_a_non_integer_id(data_dir, value):
    lookup = PostTableLookup(data_dir)
    with pytest.raises(ValueError):
        lookup([1, value])  # int(value) fails before a filter string exists
    assert [p.post_id for p in lookup([1, np.int64(2), 99])] == [1, 2]  # ints still work, the table is intact


@pytest.mark.parametrize("value", HOSTILE)
def test_id_lists_and_edge_kinds_are_not_spliced_into_filters(data_dir, value):
    with pytest.raises(ValueError):
        _ids_sql(np.array([1, value], dtype=object))
    with pytest.raises(DataDirError, match="edge kind"):
        DataDir(data_dir, fsync=False).read_edges(kind=value)
    with pytest.raises(DataDirError, match="edge kind"):
        DataDir(data_dir, fsync=False).read_edges(kind="follow' OR '1'='1")


@pytest.mark.parametrize("name", ["../../etc", "a/b", "..", "", "v1\x00", "x" * 300])
def test_embedding_version_names_cannot_leave_the_embeddings_directory(tmp_path, name):
    versions = EmbeddingVersions(tmp_path)
    try:
        path = versions.version_dir(name)
    except VersionError:
        return
    assert path.resolve().parent == (tmp_path / "embeddings").resolve()  # a harmless name inside the directory
