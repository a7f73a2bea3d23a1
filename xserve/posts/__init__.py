"""The post catalog: the system of record for posts (core data, media, subscription flag, labels, deletions),
and beside it the posts' engagement and impression counters (``counters.py``).

Pure, no Ray. Its shard actors (``xserve.actors.posts``) log every post write; Thunder and retrieval consume those logs.
"""

from xserve.posts.catalog import CatalogEvent, PostCatalog, PostLookup, event_post_id
from xserve.posts.counters import PostCounters, merge_popular
from xserve.posts.request_cache import RequestPostCache

__all__ = ["CatalogEvent", "PostCatalog", "PostCounters", "PostLookup", "RequestPostCache", "event_post_id", "merge_popular"]
