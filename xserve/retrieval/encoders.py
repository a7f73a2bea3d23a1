"""Pick the towers retrieval uses: the Phoenix checkpoint, or the synthetic clustered encoder.

``RetrievalConfig.towers_checkpoint`` names a Phoenix towers checkpoint; empty
means :class:`~xserve.synth.encoder.ClusteredEncoder` (demo worlds and
tests, no torch needed). The Phoenix adapter is imported only when a
checkpoint is named, so retrieval does not pull in torch otherwise.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from xserve.config import RetrievalConfig
from xserve.storage.layout import DataDirLayout
from xserve.retrieval.protocols import PostEncoder, UserEncoder
from xserve.synth.encoder import ClusteredEncoder

__all__ = ["FollowedPostEncoder", "TowerOnFirstUse", "encoders_for_version", "load_encoders", "towers_of_version", "towers_record"]


def load_encoders(config: RetrievalConfig) -> tuple[UserEncoder, PostEncoder, str]:
    """(user tower, candidate tower, model version string) for ``config``."""
    if not config.towers_checkpoint:
        enc = ClusteredEncoder(dim=config.embedding_dim)
        return enc, enc, f"synthetic-d{config.embedding_dim}-s{enc.seed}"
    from xserve.retrieval.towers import load_tower_encoders  # torch only when a checkpoint is named

    return load_tower_encoders(config.towers_checkpoint, config.embedding_dim)


def towers_record(towers_checkpoint: str, data_dir: str | Path) -> str:
    """How an embedding version's manifest names the towers that embedded it (``towers_checkpoint``): relative
    to the data directory when inside it, so the directory can move; "" = the synthetic encoder."""
    if not towers_checkpoint:
        return ""
    path, root = Path(towers_checkpoint).absolute(), Path(data_dir).absolute()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def towers_of_version(manifest: dict[str, Any] | None, data_dir: str | Path) -> str | None:
    """The towers checkpoint an embedding version was built with (its manifest's ``towers_checkpoint``,
    relative to the data directory when it is inside it); for a version whose manifest does not say, the first
    run's ``models/towers.pt``; None when neither says (the caller's config decides)."""
    if not manifest or "towers_checkpoint" not in manifest:
        # built before versions named their towers: by the first run's towers, if the directory still has them
        legacy = DataDirLayout(data_dir).towers_checkpoint
        return str(legacy) if legacy.is_file() and not legacy.is_symlink() else None
    path = manifest["towers_checkpoint"]
    return "" if not path else str(Path(data_dir) / path) if not Path(path).is_absolute() else path


def encoders_for_version(config: RetrievalConfig, manifest: dict[str, Any] | None,
                         data_dir: str | Path) -> tuple[UserEncoder, PostEncoder, str]:
    """The towers that go with an embedding version: the user tower must be the one that embedded its posts.

    A version whose manifest names no towers (written before versions recorded them) uses ``config``'s.
    """
    towers = towers_of_version(manifest, data_dir)
    return load_encoders(config if towers is None else msgspec.structs.replace(config, towers_checkpoint=towers))


class FollowedPostEncoder:
    """The candidate tower of the live embedding version, whichever it is now (the live indexer's encoder).

    After a switch the indexer re-reads the catalog into the new version (``LiveIndexer``), so the few posts
    embedded by the old tower around the switch are embedded again by the new one.
    """

    def __init__(self, live: Callable[[], PostEncoder]) -> None:
        self._live = live

    def encode_posts(self, post_ids: Any, author_ids: Any) -> Any:
        return self._live().encode_posts(post_ids, author_ids)


class TowerOnFirstUse:
    """A candidate tower and its model version, loaded when first asked for (``load()`` returns the pair).

    The live indexer embeds only posts created through the API: a start whose catalog holds none waiting
    never needs its tower, and loading it (torch and the checkpoint: 1.3-2 s of CPU and 220 MB PSS on a
    2-core machine, beside every other part starting) would only slow the start and hold memory. A load
    that fails raises to the caller (the indexer's flush, retried on its next tick) and is tried again on
    the next use.
    """

    def __init__(self, load: Callable[[], tuple[PostEncoder, str]]) -> None:
        self._load = load
        self._loaded: tuple[PostEncoder, str] | None = None
        self._lock = threading.Lock()  # the indexer embeds in a worker thread; one load, not two

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def load(self) -> tuple[PostEncoder, str]:
        """(the tower, its model version), loading them the first time."""
        with self._lock:
            if self._loaded is None:
                self._loaded = self._load()
            return self._loaded

    @property
    def version(self) -> str:
        return self.load()[1]

    def encode_posts(self, post_ids: Any, author_ids: Any) -> Any:
        return self.load()[0].encode_posts(post_ids, author_ids)
