"""A tiny served world, seeded and trained once per session; each served module gets its own copy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """A data directory with the tiny demo world and its first-run models (as ``served_config`` prepares it)."""
    pytest.importorskip("xserve.phoenix.train", reason="model training (phoenix branch) is not on this tree")
    from tests.deployments.test_ingress import served_config
    from xserve.app import prepare_data_dir

    path = tmp_path_factory.mktemp("tiny-world") / "data"
    prepare_data_dir(served_config(str(path)), progress=False)
    return path


def copy_world(template: Path, dest: Path) -> str:
    """A fresh copy of ``template`` at ``dest`` (its own actors: they are named after the path).

    The models (1.2 GB of hash-embedding tables, only read when serving) are linked, not copied.
    """
    shutil.copytree(template, dest, ignore=shutil.ignore_patterns("models"))
    (dest / "models").symlink_to(template / "models", target_is_directory=True)
    return str(dest)
