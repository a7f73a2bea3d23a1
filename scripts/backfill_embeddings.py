#!/usr/bin/env python
"""Re-embed every post with the candidate tower into a new embedding version, then switch to it.

    python scripts/backfill_embeddings.py --data-dir ./xserve-data [--posts posts.parquet]
        [--version NAME] [--batch-size 4096] [--concurrency 2] [--config xserve.toml]

Steps: Ray Data reads the posts (a Parquet file or directory, or the data
directory's posts table), drops posts past the max age (never retrievable),
runs the candidate tower in an actor pool with ``map_batches``, and the driver
appends the vectors to new shard tables under ``embeddings/v<version>/``. Then
each shard's ANN index is built, ``MANIFEST.json`` marks the version complete
and ``CURRENT`` is replaced atomically; serving picks the new version up on
its next poll, and every request reads one version, so no query sees a mix.
The previous version stays on disk (``retrieval.keep_versions``).

Safe to re-run: a lock file keeps two backfills apart; a half-written version
left by a crash is discarded and redone; a complete version that is not yet
current is just switched to. Changing ``retrieval.num_shards`` needs the
Retrieval deployment restarted after the switch.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from xserve import clock
from xserve.config import ConfigError, RetrievalConfig, XServeConfig, load_config  # noqa: E402
from xserve.retrieval.encoders import towers_record  # noqa: E402
from xserve.sharding import shard_array  # noqa: E402
from xserve.storage.lance.embeddings import EmbeddingShard, EmbeddingVersions, VersionError  # noqa: E402

__all__ = ["EmbedPosts", "main", "run_backfill"]

POST_COLUMNS = ["post_id", "author_id", "created_at_ms"]
REPLY_COLUMN = "in_reply_to_post_id"  # optional in the source; missing or null = not a reply


class EmbedPosts:
    """The ``map_batches`` actor: filter by age, run the candidate tower, tag each row's shard."""

    def __init__(self, retrieval: dict[str, Any], min_created_at_ms: int):
        import msgspec

        from xserve.retrieval.encoders import load_encoders

        config = msgspec.convert(retrieval, RetrievalConfig)
        _, self.encoder, _ = load_encoders(config)
        self.num_shards = config.num_shards
        self.min_created_at_ms = min_created_at_ms

    def __call__(self, batch: pa.Table) -> dict[str, np.ndarray]:
        # Arrow in (not NumPy): a nullable int64 column would arrive as float64 and lose large ids
        keep = pc.greater_equal(batch["created_at_ms"], self.min_created_at_ms)
        batch = batch.filter(keep)
        post_ids = batch["post_id"].to_numpy().astype(np.int64)
        author_ids = batch["author_id"].to_numpy().astype(np.int64)
        if REPLY_COLUMN in batch.column_names:
            replies = pc.fill_null(batch[REPLY_COLUMN], 0).to_numpy().astype(np.int64)
        else:
            replies = np.zeros(len(post_ids), np.int64)
        return {
            "post_id": post_ids,
            "author_id": author_ids,
            "created_at_ms": batch["created_at_ms"].to_numpy().astype(np.int64),
            REPLY_COLUMN: replies,
            "shard": shard_array(post_ids, self.num_shards),
            "vector": np.asarray(self.encoder.encode_posts(post_ids, author_ids), dtype=np.float32),  # (N, D)
        }


@contextmanager
def _backfill_lock(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".backfill.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise VersionError(f"another backfill holds {root / '.backfill.lock'}") from None
        yield


class _ShardWriter:
    """Buffers rows per shard and appends them in large chunks (few, big Lance fragments)."""

    def __init__(self, shards: list[EmbeddingShard], version: str, chunk_rows: int):
        self.shards = shards
        self.version = version
        self.chunk_rows = chunk_rows
        self.buffers: list[list[dict[str, np.ndarray]]] = [[] for _ in shards]
        self.buffered = [0] * len(shards)
        self.seen: list[set[int]] = [set() for _ in shards]
        self.rows = 0
        self.duplicates = 0

    def add(self, batch: dict[str, np.ndarray]) -> None:
        for s in np.unique(batch["shard"]).tolist():
            m = batch["shard"] == s
            self.buffers[s].append({k: batch[k][m] for k in ("post_id", "author_id", "created_at_ms", REPLY_COLUMN, "vector")})
            self.buffered[s] += int(m.sum())
            if self.buffered[s] >= self.chunk_rows:
                self._flush(s)

    def _flush(self, s: int) -> None:
        if not self.buffers[s]:
            return
        cols = {k: np.concatenate([b[k] for b in self.buffers[s]]) for k in self.buffers[s][0]}
        self.buffers[s], self.buffered[s] = [], 0
        # the first row of an id wins; a posts table should not repeat ids, but a Parquet export might
        _, first = np.unique(cols["post_id"], return_index=True)
        first = np.sort(first)
        fresh = first[[pid not in self.seen[s] for pid in cols["post_id"][first].tolist()]]
        self.duplicates += len(cols["post_id"]) - len(fresh)
        self.seen[s].update(cols["post_id"][fresh].tolist())
        self.rows += self.shards[s].append(
            cols["post_id"][fresh], cols["author_id"][fresh], cols["created_at_ms"][fresh], cols["vector"][fresh],
            self.version, cols[REPLY_COLUMN][fresh],
        )

    def close(self) -> None:
        for s in range(len(self.shards)):
            self._flush(s)


def _posts_dataset(ray_data: Any, data_dir: Path, posts: str | None) -> tuple[Any, int]:
    """(dataset of POST_COLUMNS, row count); the count comes from metadata, not a pass over the data."""
    if posts is not None:
        import pyarrow.dataset as pads

        path = Path(posts)
        if not path.exists():
            raise FileNotFoundError(f"--posts {posts}: no such file or directory")
        source = pads.dataset(str(path), format="parquet")
        columns = POST_COLUMNS + ([REPLY_COLUMN] if REPLY_COLUMN in source.schema.names else [])
        return ray_data.read_parquet(str(path), columns=columns), source.count_rows()
    from xserve.loop.live_data import accepted_posts

    # the posts table plus the posts created through the API since (the catalog's logs), deleted ones left out:
    # re-embedded with the rest, so a switch to a new embedding version keeps them retrievable
    table, _ = accepted_posts(data_dir, POST_COLUMNS + [REPLY_COLUMN])
    if table is None:
        from xserve.storage.lance.tables import POSTS_SCHEMA

        table = POSTS_SCHEMA.empty_table().select(POST_COLUMNS + [REPLY_COLUMN])
    return ray_data.from_arrow(table), table.num_rows


def run_backfill(
    data_dir: str | Path,
    config: XServeConfig,
    posts: str | None = None,
    version: str | None = None,
    batch_size: int = 4096,
    concurrency: int = 2,
    actor_cpus: float = 0.5,
    now_ms: int | None = None,
    switch: bool = True,
    quiet: bool = False,
    chunk_rows: int = 65_536,
) -> dict[str, Any]:
    """Write, index and (unless ``switch`` is False) switch to a new embedding version.

    Returns a summary: version, rows, skipped_old, duplicates, seconds, rows_per_s,
    embed_seconds (read → tower → write, without ray.init), index_seconds, switched.
    """
    import msgspec
    import ray
    from tqdm import tqdm

    rcfg = config.retrieval
    data_dir = Path(data_dir)
    if not data_dir.is_dir():  # the versions would be written into a new, empty directory that nothing serves
        raise FileNotFoundError(f"no data directory at {data_dir}: pass the one the server uses (xserve serve --data-dir)")
    versions = EmbeddingVersions(data_dir)
    version = EmbeddingVersions.check_name(version or time.strftime("b%Y%m%dT%H%M%S", time.gmtime()))
    now_ms = clock.now_ms() if now_ms is None else now_ms
    cutoff = now_ms - config.mixer.max_post_age_ms
    t0 = time.perf_counter()
    with _backfill_lock(versions.root):
        if versions.current_name() == version:
            return {"version": version, "rows": 0, "switched": False, "already_current": True}
        # we hold the lock, so any other incomplete version is a crashed backfill's leftovers
        for stale in versions.list_versions():
            versions.discard_incomplete(stale)
        summary: dict[str, Any] = {"version": version, "resumed": versions.manifest(version) is not None}
        if not summary["resumed"]:
            started_ray = not ray.is_initialized()
            if started_ray:
                ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR", configure_logging=False)
            try:
                ctx = ray.data.DataContext.get_current()
                ctx.enable_progress_bars = False  # one bar of our own, in rows
                ctx.print_on_execution_start = False
                logging.getLogger("ray.data").setLevel(logging.ERROR)
                warnings.filterwarnings("ignore", category=UserWarning, module=r"ray\.data")
                warnings.filterwarnings("ignore", message="lancedb fork support")  # fork+exec helpers: safe
                t_embed = time.perf_counter()  # rows/s covers read → tower → write, not ray.init
                ds, total = _posts_dataset(ray.data, data_dir, posts)
                if total == 0:  # switching to an empty version would leave retrieval nothing to serve
                    raise ValueError(f"no posts to embed in {posts or data_dir}: seed or import a world first")
                versions.begin(version)
                shards = [versions.open_shard(version, s, rcfg, create=True) for s in range(rcfg.num_shards)]
                writer = _ShardWriter(shards, version, chunk_rows)
                embedded = ds.map_batches(
                    EmbedPosts,
                    fn_constructor_kwargs={"retrieval": msgspec.to_builtins(rcfg), "min_created_at_ms": cutoff},
                    batch_size=batch_size,
                    batch_format="pyarrow",
                    concurrency=concurrency,
                    num_cpus=actor_cpus,
                )
                seen = 0
                with tqdm(total=total, unit="post", desc=f"embed v{version}", disable=quiet) as bar:
                    for batch in embedded.iter_batches(batch_size=batch_size, batch_format="numpy"):
                        writer.add(batch)
                        seen += len(batch["post_id"])
                        bar.update(len(batch["post_id"]))
                    writer.close()
                    bar.update(total - bar.n)  # rows past the max age were dropped before they reached us
                summary["embed_seconds"] = time.perf_counter() - t_embed
            finally:
                if started_ray:
                    ray.shutdown()
            summary.update(rows=writer.rows, skipped_old=total - seen, duplicates=writer.duplicates)
            t1 = time.perf_counter()
            for shard in tqdm(shards, desc="build indexes", unit="shard", disable=quiet):
                shard.build_index()
            summary["index_seconds"] = time.perf_counter() - t1
            versions.finish(version, rcfg.num_shards, rcfg.embedding_dim, rows=writer.rows, now_ms=now_ms,
                            towers_checkpoint=towers_record(rcfg.towers_checkpoint, data_dir))
        summary["switched"] = False
        if switch:
            versions.switch(version)
            versions.prune(rcfg.keep_versions)
            summary["switched"] = True
    summary["seconds"] = time.perf_counter() - t0
    summary["rows_per_s"] = summary.get("rows", 0) / max(summary.get("embed_seconds", 0.0), 1e-9)
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="backfill_embeddings",
        description="Re-embed all posts with the candidate tower into a new LanceDB embedding version and switch serving to it atomically.",
    )
    p.add_argument("--data-dir", required=True, help="xserve data directory (embeddings/ is written under it)")
    p.add_argument("--posts", help="Parquet file or directory with post_id, author_id, created_at_ms (default: the data directory's posts table)")
    p.add_argument("--version", help="name of the new embedding version (default: b<UTC timestamp>)")
    p.add_argument("--config", help="xserve config file (.toml/.yaml); retrieval and mixer sections are used")
    p.add_argument("--towers-checkpoint", help="Phoenix towers checkpoint (overrides retrieval.towers_checkpoint)")
    p.add_argument("--num-shards", type=int, help="shard count of the new version (overrides retrieval.num_shards)")
    p.add_argument("--batch-size", type=int, default=4096, help="rows per map_batches call (default 4096)")
    p.add_argument("--concurrency", type=int, default=2, help="candidate-tower actors in the pool (default 2)")
    p.add_argument("--actor-cpus", type=float, default=0.5,
                   help="CPUs reserved per tower actor (default 0.5: leaves room for the read tasks on small machines)")
    p.add_argument("--now-ms", type=int, help="clock for the max-age cut (default: now)")
    p.add_argument("--no-switch", action="store_true", help="write and index the version but leave CURRENT alone")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.concurrency < 1:
        parser.error("--batch-size and --concurrency must be >= 1")
    if args.actor_cpus <= 0:
        parser.error(f"--actor-cpus must be > 0, got {args.actor_cpus}")
    overrides: dict[str, Any] = {}
    if args.towers_checkpoint is not None:
        overrides["towers_checkpoint"] = args.towers_checkpoint
    if args.num_shards is not None:
        if args.num_shards < 1:
            parser.error(f"--num-shards must be >= 1, got {args.num_shards}")
        overrides["num_shards"] = args.num_shards
    try:
        config = load_config(args.config, overrides={"retrieval": overrides} if overrides else None)
        summary = run_backfill(
            args.data_dir, config, posts=args.posts, version=args.version, batch_size=args.batch_size,
            concurrency=args.concurrency, actor_cpus=args.actor_cpus, now_ms=args.now_ms, switch=not args.no_switch, quiet=args.quiet,
        )
    except (ConfigError, VersionError, FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    except Exception as exc:  # anything else (Ray, Arrow, disk): one line, no trace; re-running is safe
        print(f"backfill_embeddings: error: backfill failed: {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    if summary.get("already_current"):
        print(f"backfill: version {summary['version']} is already current; nothing to do")
    elif summary.get("resumed"):
        print(f"backfill: version {summary['version']} was already written; {'switched' if summary['switched'] else 'not switched'}")
    else:
        print(
            f"backfill: version {summary['version']}: {summary.get('rows', 0)} rows"
            f" ({summary.get('skipped_old', 0)} past max age skipped) in {summary['seconds']:.1f} s,"
            f" {summary['rows_per_s']:.0f} rows/s embedding; {'switched' if summary['switched'] else 'not switched'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
