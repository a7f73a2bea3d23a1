"""Every path under the data directory, defined once.

The data directory holds all durable state of one deployment; every part finds
its files through :class:`DataDirLayout`, so moving a file is a change here
alone (and a migration of existing directories)::

    DIR/meta.json                        schema version, world description
    DIR/{posts,users,edges,engagements}.lance    the LanceDB tables
    DIR/ground_truth.npz                 synthetic worlds only: the generative model's latents
    DIR/.prepare.lock                    first-run seeding and training, one process at a time
    DIR/models/{ranker,towers}.pt        the trained Phoenix checkpoints (first run; directories without versions)
    DIR/models/CURRENT                   the live model version (``xserve train`` switches it atomically)
    DIR/models/v<name>/                  one model version (ranker.pt, towers.pt, MANIFEST.json)
    DIR/impressions/shard-<i>-of-<n>/    served feeds as impressions and the seen reports, one log per user-store shard
    DIR/loop/reports/                    one JSON report per continuous-training cycle
    DIR/users/shard-<i>-of-<n>/          user-store event logs (one per shard)
    DIR/hydration/shard-<i>-of-<n>/      post-catalog event logs: the source of truth for posts
    DIR/thunder/events/                  Thunder's post-event log
    DIR/thunder/catalog_watermark.json   how far Thunder has read the post catalog's logs
    DIR/embeddings/CURRENT               the live embedding version
    DIR/embeddings/v<name>/              one embedding version (MANIFEST.json, shard tables)
    DIR/embeddings/LIVE_WATERMARK.json   how far the live indexer has read the post catalog's logs
    DIR/ads/events/                      the ads inventory's event log (puts, deletes, deliveries)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["RANKER_FILE", "SHARD_LOG_GLOB", "TOWERS_FILE", "DataDirLayout"]

SHARD_LOG_GLOB = "shard-*-of-*"  # every shard's log of a sharded store, of any shard count
RANKER_FILE = "ranker.pt"  # in a models directory (``xserve train --out`` writes both)
TOWERS_FILE = "towers.pt"


def _shard_dir(shard: int, num_shards: int) -> str:
    return f"shard-{shard}-of-{num_shards}"


@dataclass(frozen=True, slots=True)
class DataDirLayout:
    """The paths of the data directory ``root`` (nothing is created or read here)."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    def table(self, name: str) -> Path:
        return self.root / f"{name}.lance"

    @property
    def meta(self) -> Path:
        return self.root / "meta.json"

    @property
    def ground_truth(self) -> Path:
        return self.root / "ground_truth.npz"

    @property
    def prepare_lock(self) -> Path:
        return self.root / ".prepare.lock"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def ranker_checkpoint(self) -> Path:
        return self.models / RANKER_FILE

    @property
    def towers_checkpoint(self) -> Path:
        return self.models / TOWERS_FILE

    @property
    def current_models(self) -> Path:
        return self.models / "CURRENT"

    def model_version(self, name: str) -> Path:
        return self.models / f"v{name}"

    @property
    def impression_logs(self) -> Path:
        return self.root / "impressions"

    def impression_log(self, shard: int, num_shards: int) -> Path:
        return self.impression_logs / _shard_dir(shard, num_shards)

    @property
    def loop_reports(self) -> Path:
        return self.root / "loop" / "reports"

    @property
    def user_logs(self) -> Path:
        return self.root / "users"

    def user_log(self, shard: int, num_shards: int) -> Path:
        return self.user_logs / _shard_dir(shard, num_shards)

    @property
    def catalog_logs(self) -> Path:
        return self.root / "hydration"  # named before the catalog was; kept so existing directories still open

    def catalog_log(self, shard: int, num_shards: int) -> Path:
        return self.catalog_logs / _shard_dir(shard, num_shards)

    @property
    def thunder_events(self) -> Path:
        return self.root / "thunder" / "events"

    @property
    def thunder_catalog_watermark(self) -> Path:
        return self.root / "thunder" / "catalog_watermark.json"

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings"

    @property
    def current_embeddings(self) -> Path:
        return self.embeddings / "CURRENT"

    def embedding_version(self, name: str) -> Path:
        return self.embeddings / f"v{name}"

    @property
    def live_index_watermark(self) -> Path:
        return self.embeddings / "LIVE_WATERMARK.json"

    @property
    def ads_events(self) -> Path:
        return self.root / "ads" / "events"
