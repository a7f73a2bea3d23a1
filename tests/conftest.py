"""Shared test fixtures. Ray tests share one small local cluster for the whole session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray (2 CPUs, no dashboard) for every test marked ``ray``; shut down at the end."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            logging_level="ERROR",
        )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A data directory holding the tiny demo world and its quickly trained models, prepared once a session.

    Read-only: a test that serves or writes copies it first (:func:`copy_world`).
    Preparing costs ~40 s here (mostly training), so the modules that run the whole app share it.
    """
    from xserve.config import load_config
    from xserve.synth.bootstrap import prepare_data_dir

    path = tmp_path_factory.mktemp("tiny-world")
    config = load_config(
        environ={},
        overrides={
            "storage": {"data_dir": str(path), "fsync": False},
            "train": {"epochs": 1},
            "serving": {"demo_world": "tiny", "bootstrap_train_examples": 500},
        },
    )
    prepare_data_dir(config, progress=False)
    return path


def copy_world(template, dest) -> str:
    """A fresh copy of the ``tiny_world`` at ``dest`` (its own actors: they are named after the path).

    The models (1.2 GB of hash-embedding tables, only read when serving) are linked, not copied.
    """
    import shutil
    from pathlib import Path

    template, dest = Path(template), Path(dest)
    shutil.copytree(template, dest, ignore=shutil.ignore_patterns("models"))
    (dest / "models").symlink_to(template / "models", target_is_directory=True)
    return str(dest)
