"""Post hydration: post records (core data, media, subscription flag, labels) with an LRU cache (pure, no Ray)."""

from xserve.hydration.catalog import CatalogEvent, PostCatalog, PostLookup

__all__ = ["CatalogEvent", "PostCatalog", "PostLookup"]
