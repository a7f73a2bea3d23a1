"""The For You application: ``build_app(config)`` composes every deployment; ``app`` is what Serve runs.

``serve run xserve.app`` (or ``xserve serve`` / ``make run``) serves on
http://127.0.0.1:8000 with the data directory ``$XSERVE_DATA_DIR`` (default
``./xserve-data``). Building the app first prepares the data directory: when
it holds no world it seeds the demo world (``serving.demo_world``) and trains
the small models, with progress bars; when it does, this takes no time.

This is the only module that calls ``.bind()``: it decides which deployments
make up the application and which stateful actors (named after the data
directory, :class:`~xserve.actors.naming.ActorNames`) they share. The replicas
attach to those actors when they start (:mod:`xserve.actors.stateful` says why
not here). Each deployment gets one replica with CPU reservations that fit a
2-CPU machine; replicas, autoscaling and queue limits for production are in
``serve_config.yaml``.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path
from typing import Any

from ray.serve import Application

from xserve import clock
from xserve.actors.naming import ActorNames
from xserve.config import ConfigError, XServeConfig, config_to_dict, load_config, merge_config
from xserve.storage.layout import DataDirLayout

__all__ = ["app", "build_app", "ingress_options", "prepare_data_dir", "serve_forever", "with_models"]


def _say(msg: str) -> None:
    print(f"xserve: {msg}", file=sys.stderr, flush=True)


def prepare_data_dir(config: XServeConfig, progress: bool = True) -> dict[str, Any]:
    """Seed the demo world and train the models if the data directory lacks them; returns what it did.

    Safe to call from several processes at once: a file lock serialises them
    and the later ones find the work done.
    """
    from xserve.storage import DataDir

    path = Path(config.storage.data_dir)
    path.mkdir(parents=True, exist_ok=True)
    done: dict[str, Any] = {}
    with open(DataDirLayout(path).prepare_lock, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        dd = DataDir(path, fsync=config.storage.fsync)
        if dd.is_empty():
            from xserve.synth.seed import seed_data_dir

            started = time.perf_counter()
            _say(f"seeding the {config.serving.demo_world} demo world into {path} (first run only)")
            seed_data_dir(dd, config.serving.demo_world, config.train.seed, progress=progress)
            done["seed_s"] = round(time.perf_counter() - started, 1)
        done.update(_ensure_models(config, dd, progress))
    world_now = dd.meta().get("world", {}).get("now_ms")
    if world_now is not None and clock.now_ms() - world_now > config.mixer.max_post_age_ms:
        _say(f"the demo world in {path} is older than mixer.max_post_age_ms: its posts are too old to be candidates; "
             "`xserve seed --force` makes a fresh one")
    return done


def _ensure_models(config: XServeConfig, dd: Any, progress: bool) -> dict[str, Any]:
    """Train the ranker and towers, index the posts for retrieval and fill Thunder's log, unless done."""
    from xserve.phoenix.training.train import train

    done: dict[str, Any] = {}
    layout = DataDirLayout(config.storage.data_dir)  # `xserve train` writes the models there too
    if not layout.ranker_checkpoint.exists() or not layout.towers_checkpoint.exists():
        _say(f"training the ranker and the retrieval towers on {dd.count('engagements'):,} engagements (first run only)")
        started = time.perf_counter()
        n = config.serving.bootstrap_train_examples  # a quick first model; `xserve train` trains longer
        quick = merge_config(config, {"train": {"ranker_examples_per_epoch": n, "tower_examples_per_epoch": n}})
        train(dd.read_engagements(), dd.read_posts(), quick, out_dir=layout.models, progress=progress)
        done["train_s"] = round(time.perf_counter() - started, 1)
    served = with_models(config)
    now_ms = clock.now_ms()
    recent = None
    from xserve.storage.lance.embeddings import EmbeddingVersions

    if EmbeddingVersions(config.storage.data_dir).current_name() is None:
        started = time.perf_counter()
        recent = _recent_posts(dd, now_ms - config.mixer.max_post_age_ms)
        done["indexed"] = _index_posts(served, recent, now_ms, progress)
        done["index_s"] = round(time.perf_counter() - started, 1)
    from xserve.thunder.ingest import open_event_log

    log = open_event_log(config.storage, config.thunder, writer=True)
    try:
        if log.next_offset == 0:
            from xserve.schema import PostCreated

            recent = recent if recent is not None else _recent_posts(dd, now_ms - config.thunder.retention_ms)
            log.append([PostCreated(p) for p in recent if p.created_at_ms >= now_ms - config.thunder.retention_ms], now_ms)
            done["thunder_events"] = log.next_offset
    finally:
        log.close()
    return done


def with_models(config: XServeConfig) -> XServeConfig:
    """``config`` serving the data directory's trained models where it names none."""
    layout = DataDirLayout(config.storage.data_dir)
    changes: dict[str, Any] = {}
    if not config.ranker_serving.checkpoint and layout.ranker_checkpoint.exists():
        changes["ranker_serving"] = {"checkpoint": str(layout.ranker_checkpoint)}
    if not config.retrieval.towers_checkpoint and layout.towers_checkpoint.exists():
        changes["retrieval"] = {"towers_checkpoint": str(layout.towers_checkpoint)}
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

    from xserve.retrieval.encoders import load_encoders
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
    versions.finish(version, rcfg.num_shards, rcfg.embedding_dim, rows=len(ids), now_ms=now_ms)
    versions.switch(version)
    return len(ids)


def build_app(
    config: XServeConfig | None = None, prepare: bool = True, user_config: dict[str, Any] | None = None
) -> Application:
    """The application: ``FeedIngress`` (HTTP) bound to the ``Retrieval`` and ``Ranker`` deployments.

    ``config`` defaults to ``load_config($XSERVE_CONFIG)`` (env overrides apply); ``prepare`` seeds and
    trains when the data directory needs it; ``user_config`` is the ingress's live settings (as in
    ``serve_config.yaml``), applied through ``FeedIngress.reconfigure``.
    """
    from xserve.deployments.ingress import FeedIngress
    from xserve.deployments.ranker import Ranker, ranker_options
    from xserve.deployments.retrieval import Retrieval

    config = config or load_config(os.environ.get("XSERVE_CONFIG"))
    if prepare:
        prepare_data_dir(config)
    config = with_models(merge_config(config, {"storage": {"data_dir": str(Path(config.storage.data_dir).resolve())}}))
    data_dir = config.storage.data_dir
    names = ActorNames.of(data_dir)  # every replica of every deployment shares these actors
    cpus = config.serving
    retrieval = Retrieval.options(ray_actor_options={"num_cpus": cpus.retrieval_num_cpus}).bind(
        data_dir, config_to_dict(config.retrieval), config.mixer.max_post_age_ms, names, detached=True
    )
    ranker = Ranker.options(**ranker_options(config)).bind(config)
    options: dict[str, Any] = {"ray_actor_options": {"num_cpus": cpus.ingress_num_cpus}, **ingress_options(config)}
    if user_config is not None:
        options["user_config"] = user_config
    return FeedIngress.options(**options).bind(config_to_dict(config), names, retrieval, ranker)


def ingress_options(config: XServeConfig) -> dict[str, Any]:
    """Serve's own bounds on the ingress: requests per replica, and a bounded proxy queue answering 503 beyond it.

    The replica admits up to ``max_inflight_*`` per class and refuses the rest
    itself (JSON 503, Retry-After), so ``ingress_max_ongoing_requests`` should
    exceed their sum; Serve's queue only fills when every replica is saturated
    even with refusals, and its 503 also carries Retry-After.
    """
    s = config.serving
    for name in ("max_inflight_feeds", "max_inflight_writes", "ingress_max_ongoing_requests", "ingress_max_queued_requests"):
        if getattr(s, name) < 1:
            raise ConfigError(f"serving.{name} must be >= 1, got {getattr(s, name)}")
    if not s.retry_after_s >= 0:
        raise ConfigError(f"serving.retry_after_s must be >= 0, got {s.retry_after_s}")
    return {
        "max_ongoing_requests": s.ingress_max_ongoing_requests,
        "max_queued_requests": s.ingress_max_queued_requests,
        "backpressure_config": {"status_code": 503, "retry_after_s": s.retry_after_s},
    }


def serve_forever(config: XServeConfig, num_cpus: int | None = None) -> None:
    """``xserve serve``: start a local Ray (``num_cpus``: all when None), serve the app on ``serving.host:port``
    until interrupted. Says the Ray address on stderr, for ``ray status --address`` and ``scripts/chaos.py``."""
    import warnings

    import ray
    from ray import serve

    # starting Ray forks after prepare_data_dir used LanceDB here; this process does no LanceDB work meanwhile
    warnings.filterwarnings("ignore", message="lancedb fork support is experimental")
    ray.init(num_cpus=num_cpus, namespace="xserve", include_dashboard=False, logging_level="WARNING",
             configure_logging=False)
    quiet = {"log_level": "WARNING", "enable_access_log": False}  # logs quiet by default; Ray's log files keep the rest
    try:
        serve.start(http_options={"host": config.serving.host, "port": config.serving.port}, logging_config=quiet)
        serve.run(build_app(config, prepare=False), blocking=False, logging_config=quiet)
        address = ray.get_runtime_context().gcs_address
        _say(f"serving on http://{config.serving.host}:{config.serving.port} (Ray at {address}; Ctrl-C stops)")
        while True:
            time.sleep(3600)
    finally:
        ray.shutdown()  # takes Serve and the store actors with it (serve.shutdown alone can take 30 s)


def __getattr__(name: str) -> Any:
    # ``app`` is built on first access, not at import: importing xserve.app has no side effects.
    if name == "app":
        application = build_app()
        globals()["app"] = application
        return application
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
