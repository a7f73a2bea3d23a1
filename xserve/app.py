"""The For You application: ``build_app(config)`` composes every deployment; ``app`` is what Serve runs.

``serve run xserve.app`` (or ``xserve serve`` / ``make run``) serves on
http://127.0.0.1:8000 with the data directory ``$XSERVE_DATA_DIR`` (default
``./xserve-data``). Building the app first prepares the data directory: when
it holds no world it seeds the demo world (``serving.demo_world``) and trains
the small models, with progress bars; when it does, this takes no time.

This is the only module that calls ``.bind()``. Deployment options
(replicas, autoscaling, queue limits) are Serve's defaults here and are set
per deployment in ``serve_config.yaml`` for production.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path
from typing import Any

from ray.serve import Application

from xserve.config import XServeConfig, config_to_dict, load_config

__all__ = ["app", "build_app", "prepare_data_dir"]


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
    with open(path / ".prepare.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        dd = DataDir(path, fsync=config.storage.fsync)
        if dd.is_empty():
            from xserve.synth.seed import seed_data_dir

            started = time.perf_counter()
            _say(f"seeding the {config.serving.demo_world} demo world into {path} (first run only)")
            seed_data_dir(dd, config.serving.demo_world, config.train.seed, progress=progress)
            done["seed_s"] = round(time.perf_counter() - started, 1)
        done.update(_ensure_models(config, dd, progress))
    return done


def _ensure_models(config: XServeConfig, dd: Any, progress: bool) -> dict[str, Any]:
    """Train the ranker and towers and index the posts for retrieval, unless already done."""
    raise NotImplementedError("wired when the phoenix and retrieval branches land")


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
    data_dir = str(Path(config.storage.data_dir).resolve())
    config = load_config(environ={}, overrides={**config_to_dict(config), "storage": {**config_to_dict(config.storage), "data_dir": data_dir}})
    retrieval = Retrieval.bind(data_dir, config_to_dict(config.retrieval), config.mixer.max_post_age_ms, True)
    ranker = Ranker.options(**ranker_options(config)).bind(config)
    ingress = FeedIngress if user_config is None else FeedIngress.options(user_config=user_config)
    return ingress.bind(config_to_dict(config), retrieval, ranker)


def __getattr__(name: str) -> Any:
    # ``app`` is built on first access, not at import: importing xserve.app has no side effects.
    if name == "app":
        application = build_app()
        globals()["app"] = application
        return application
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
