"""Durable storage under the data directory: LanceDB tables and the event log (the only package that imports lancedb)."""

from xserve.storage.lance.tables import (
    EDGE_KINDS,
    EDGES_SCHEMA,
    ENGAGEMENTS_SCHEMA,
    POSTS_SCHEMA,
    SCHEMA_VERSION,
    TABLE_KEYS,
    TABLES,
    USERS_SCHEMA,
    DataDir,
    DataDirError,
    engagements_to_table,
    posts_to_table,
    table_to_engagements,
    table_to_numpy,
    table_to_posts,
)

__all__ = [
    "EDGES_SCHEMA",
    "EDGE_KINDS",
    "ENGAGEMENTS_SCHEMA",
    "POSTS_SCHEMA",
    "SCHEMA_VERSION",
    "TABLES",
    "TABLE_KEYS",
    "USERS_SCHEMA",
    "DataDir",
    "DataDirError",
    "engagements_to_table",
    "posts_to_table",
    "table_to_engagements",
    "table_to_numpy",
    "table_to_posts",
]
