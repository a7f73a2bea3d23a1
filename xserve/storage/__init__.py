"""Durable storage under the data directory: LanceDB tables and the event log (the only package that imports lancedb).

The table names below load on first use (PEP 562): ``xserve.storage.layout`` or the
event log, which every store actor imports, must not bring pyarrow and pandas
into processes that never read a table (Thunder, the ads inventory, the ingress).
"""

from typing import Any

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


def __getattr__(name: str) -> Any:
    if name in __all__:
        from xserve.storage.lance import tables

        return getattr(tables, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
