"""Write a synthetic world into a data directory (what ``xserve seed`` runs).

The glue between the pure generator (:mod:`xserve.synth.world`) and storage
(:class:`xserve.storage.DataDir`); tests and other packages' fixtures use
:func:`seed_data_dir` to get a ready data directory.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from xserve import clock
from xserve.storage import DataDir, DataDirError
from xserve.synth.world import WORLD_SIZES, World, WorldSpec, generate_world

__all__ = ["seed_data_dir"]


def seed_data_dir(
    data_dir: DataDir,
    size: str | WorldSpec = "tiny",
    seed: int = 0,
    now_ms: int | None = None,
    *,
    force: bool = False,
    progress: bool = False,
) -> World:
    """Generate a world (``size`` a WORLD_SIZES name or a spec) and write it to ``data_dir``.

    Refuses (DataDirError) when the directory already holds rows, unless ``force`` clears it first.
    ``now_ms`` defaults to the current time; pass it for reproducible tables. Returns the world, with
    ``timings_s`` extended by ``write``.
    """
    if isinstance(size, str) and size not in WORLD_SIZES:
        raise ValueError(f"world size must be one of {tuple(WORLD_SIZES)}, got {size!r}")
    spec = WORLD_SIZES[size] if isinstance(size, str) else size
    if not data_dir.is_empty():
        if not force:
            raise DataDirError(f"{data_dir.path} already holds a world {data_dir.counts()}; pass --force to replace it")
        data_dir.clear()
    now_ms = clock.now_ms() if now_ms is None else now_ms
    bar = _progress_bar(spec, progress)
    counted = ("users", "posts", "engagements")  # the stages the bar's total is made of
    world = generate_world(spec, np.random.default_rng(seed), now_ms, seed=seed,
                           progress=(lambda stage, n: bar.update(n) if stage in counted else None) if bar else None)
    started = time.perf_counter()
    if bar:
        bar.set_description("writing")
    for name, write in (("users", data_dir.write_users), ("posts", data_dir.write_posts),
                        ("edges", data_dir.write_edges), ("engagements", data_dir.write_engagements)):
        write(getattr(world, name), mode="overwrite")
    data_dir.write_ground_truth(world.ground_truth)
    data_dir.update_meta(world=world.meta())
    world.timings_s["write"] = round(time.perf_counter() - started, 3)
    if bar:
        bar.close()
    return world


def _progress_bar(spec: WorldSpec, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    total = spec.num_users + spec.num_posts + spec.num_engagements
    return tqdm(total=total, desc=f"seeding {spec.name}", unit="rows", unit_scale=True, leave=False)
