"""First-run bootstrap: a data directory that can be served, from an empty one.

:func:`prepare_data_dir` seeds the demo world (``serving.demo_world``) when the
data directory holds none, trains the small ranker and retrieval towers when
it has no models, indexes the recent posts into the first embedding version
and fills Thunder's event log; work already done is skipped, so on a prepared
directory this takes no time. ``app.py`` (``serve run xserve.app``) and
``xserve serve`` call it before serving; :func:`with_models` points a config at
the directory's trained models.
"""

from __future__ import annotations

import fcntl
import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xserve import clock
from xserve.config import XServeConfig, merge_config
from xserve.storage.layout import DataDirLayout
from xserve.storage.model_versions import ModelVersions

__all__ = ["prepare_data_dir", "say", "with_models"]


def say(msg: str) -> None:
    """One progress line on stderr, as the ``xserve`` command writes them."""
    print(f"xserve: {msg}", file=sys.stderr, flush=True)


def prepare_data_dir(config: XServeConfig, progress: bool = True) -> dict[str, Any]:
    """Seed the demo world and train the models if the data directory lacks them; returns what it did.

    Safe to call from several processes at once: a file lock serialises them
    and the later ones find the work done.
    """
    path = Path(config.storage.data_dir)
    path.mkdir(parents=True, exist_ok=True)
    layout = DataDirLayout(path)
    prepare_started = time.perf_counter()
    done: dict[str, Any] = {}
    with open(layout.prepare_lock, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)

        @functools.cache
        def dd() -> Any:
            # the tables (LanceDB: seconds to import and open) are opened only when there is work to do: a directory
            # with trained models was seeded or imported already, and a later run reads none of them here
            from xserve.storage import DataDir

            return DataDir(path, fsync=config.storage.fsync)

        if not all(p.exists() for p in ModelVersions(layout.root).live_paths()) and dd().is_empty():
            from xserve.synth.seed import seed_data_dir

            started = time.perf_counter()
            say(f"seeding the {config.serving.demo_world} demo world into {path} (first run only)")
            seed_data_dir(dd(), config.serving.demo_world, config.train.seed, progress=progress)
            done["seed_s"] = round(time.perf_counter() - started, 1)
        done.update(_ensure_models(config, dd, progress))
    if any(k.endswith("_s") for k in done):  # work was done: say how long each part took (benchmarks/bench_start.py)
        say(f"prepared in {time.perf_counter() - prepare_started:.1f} s: {json.dumps(done)}")
    world_now = (json.loads(layout.meta.read_text()) if layout.meta.exists() else {}).get("world", {}).get("now_ms")
    if world_now is not None and clock.now_ms() - world_now > config.mixer.max_post_age_ms:
        say(f"the demo world in {path} is older than mixer.max_post_age_ms: its posts are too old to be candidates; "
             "`xserve seed --force` makes a fresh one")
    return done


def _ensure_models(config: XServeConfig, dd: Callable[[], Any], progress: bool) -> dict[str, Any]:
    """Train the ranker and towers, index the posts for retrieval and fill Thunder's log, unless done
    (``dd()`` opens the data directory's tables, when they are needed)."""
    done: dict[str, Any] = {}
    layout = DataDirLayout(config.storage.data_dir)
    ranker_path, towers_path = ModelVersions(layout.root).live_paths()  # `xserve train` writes versions
    if not ranker_path.exists() or not towers_path.exists():
        from xserve.phoenix.training.train import train  # torch: a later run's server process never loads it

        say(f"training the ranker and the retrieval towers on {dd().count('engagements'):,} engagements (first run only)")
        started = time.perf_counter()
        n = config.serving.bootstrap_train_examples  # a quick first model; `xserve train` trains longer
        s, ph = config.serving, config.phoenix
        quick = merge_config(config, {
            "train": {"ranker_examples_per_epoch": n, "tower_examples_per_epoch": n, "epochs": s.bootstrap_train_epochs,
                      "batch_size": s.bootstrap_train_batch_size},
            # tables sized for the demo world (the checkpoint carries its config: serving reads these sizes back)
            "phoenix": {"post_vocab": min(ph.post_vocab, s.bootstrap_post_vocab),
                        "user_vocab": min(ph.user_vocab, s.bootstrap_user_vocab),
                        "author_vocab": min(ph.author_vocab, s.bootstrap_user_vocab)},
        })
        train(dd().read_engagements(), dd().read_posts(), quick, out_dir=layout.models, progress=progress,
              users=dd().read_users())
        done["train_s"] = round(time.perf_counter() - started, 1)
    served = with_models(config)
    now_ms = clock.now_ms()
    recent = None
    from xserve.storage.lance.embeddings import EmbeddingVersions

    if EmbeddingVersions(config.storage.data_dir).current_name() is None:
        started = time.perf_counter()
        recent = _recent_posts(dd(), now_ms - config.mixer.max_post_age_ms)
        done["indexed"] = _index_posts(served, recent, now_ms, progress)
        done["index_s"] = round(time.perf_counter() - started, 1)
    from xserve.thunder.ingest import open_event_log

    log = open_event_log(config.storage, config.thunder, writer=True)
    try:
        if log.next_offset == 0:
            from xserve.schema import PostCreated
            from xserve.thunder.refs import carry_refs

            recent = recent if recent is not None else _recent_posts(dd(), now_ms - config.thunder.retention_ms)
            kept = [p for p in recent if p.created_at_ms >= now_ms - config.thunder.retention_ms]
            # what each reply and repost refers to, as the write path would fill it (a parent older than
            # retention gets no ref: the reply rule drops its replies anyway)
            log.append([PostCreated(p) for p in carry_refs(kept)], now_ms)
            done["thunder_events"] = log.next_offset
    finally:
        log.close()
    return done


def with_models(config: XServeConfig) -> XServeConfig:
    """``config`` serving the data directory's trained models (its current model version) where it names none."""
    ranker_path, towers_path = ModelVersions(config.storage.data_dir).live_paths()
    changes: dict[str, Any] = {}
    if not config.ranker_serving.checkpoint and ranker_path.exists():
        changes["ranker_serving"] = {"checkpoint": str(ranker_path)}
    if not config.retrieval.towers_checkpoint and towers_path.exists():
        changes["retrieval"] = {"towers_checkpoint": str(towers_path)}
    return merge_config(config, changes)


def _recent_posts(dd: Any, min_created_at_ms: int) -> list[Any]:
    from xserve.storage.lance.post_lookup import PostTableLookup

    return PostTableLookup(dd.path).recent(min_created_at_ms)


def _index_posts(config: XServeConfig, posts: list[Any], now_ms: int, progress: bool) -> int:
    """Embed the candidate-eligible posts with the candidate tower into the first embedding version.

    The demo's in-process path (no Ray needed before serving); ``scripts/backfill_embeddings.py``
    is the Ray Data path that re-embeds a whole corpus at scale.
    """
    import numpy as np
    from tqdm import tqdm

    from xserve.retrieval.encoders import load_encoders, towers_record
    from xserve.sharding import shard_array
    from xserve.storage.lance.embeddings import EmbeddingVersions

    rcfg = config.retrieval
    _, encoder, model_version = load_encoders(rcfg)
    versions = EmbeddingVersions(config.storage.data_dir)
    version = "initial"
    versions.begin(version)
    shards = [versions.open_shard(version, s, rcfg, create=True) for s in range(rcfg.num_shards)]
    ids = np.array([p.post_id for p in posts], dtype=np.int64)
    authors = np.array([p.author_id for p in posts], dtype=np.int64)
    created = np.array([p.created_at_ms for p in posts], dtype=np.int64)
    owner = shard_array(ids, rcfg.num_shards)
    for s, shard in enumerate(tqdm(shards, desc="indexing posts", unit="shard", disable=not progress)):
        mine = np.nonzero(owner == s)[0]
        vectors = [encoder.encode_posts(ids[c], authors[c]) for c in np.array_split(mine, max(1, len(mine) // 8192))]
        if len(mine):
            shard.upsert(ids[mine], authors[mine], created[mine], np.concatenate(vectors), model_version)
        shard.build_index()
    versions.finish(version, rcfg.num_shards, rcfg.embedding_dim, rows=len(ids), now_ms=now_ms,
                    towers_checkpoint=towers_record(rcfg.towers_checkpoint, config.storage.data_dir))
    versions.switch(version)
    return len(ids)
