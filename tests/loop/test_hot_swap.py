"""A model hot swap and a rollback over HTTP under a small feed load, on the session's app (``served_app``).

The full run with the figures (p99 before and during the swap, a real retrain with ``--train``) is
``scripts/hot_swap_check.py``; this is its representative case: no 5xx, no answer scored by two versions,
the new version seen by every later answer, and the old one again after ``xserve models rollback``.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from scripts.hot_swap_check import SwapProbe, derive_version, load_loop, register_live
from xserve import clock
from xserve.storage.model_versions import ModelVersions
from tests.conftest import wait_until

pytestmark = pytest.mark.ray


async def _swap(url: str, versions: ModelVersions, base: str, nxt: str, base_version: str, next_version: str,
                poll_s: float) -> SwapProbe:
    probe, stop = SwapProbe(), asyncio.Event()
    tasks = [asyncio.create_task(load_loop(url, list(range(1, 60)), probe, stop, i)) for i in range(2)]

    async def until_visible(version: str, since: float) -> None:
        deadline = time.monotonic() + 20 * poll_s + 30
        while probe.visible_at(version, since) is None or sum(1 for t, *_ in probe.samples if t >= since) < 8:
            assert time.monotonic() < deadline, f"no answer named {version}: {probe.samples[-3:]}"
            await asyncio.sleep(0.1)

    try:
        await until_visible(base_version, time.monotonic())
        t_switch = time.monotonic()
        versions.switch(nxt, clock.now_ms())
        await until_visible(next_version, t_switch)
        t_back = time.monotonic()
        assert versions.rollback(clock.now_ms())["version"] == base
        await until_visible(base_version, t_back)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    return probe


@pytest.mark.budget(60, reason="two model loads by the Ranker replica while feeds are read: the one hot-swap case in CI")
def test_a_new_model_version_goes_live_under_load_without_5xx_or_mixed_requests_and_rolls_back(served_app):
    versions = ModelVersions(served_app.config.storage.data_dir)
    base = versions.new_name(clock.now_ms()) + "-base"
    base_version = register_live(versions, base)  # the weights serving now, as a version (no change in scores)
    next_version = derive_version(versions, base, base.replace("-base", "-next"))
    assert next_version != base_version
    probe = asyncio.run(_swap(served_app.url, versions, base, base.replace("-base", "-next"), base_version,
                              next_version, served_app.config.loop.model_poll_s))
    assert probe.errors_5xx() == 0
    assert probe.mixed() == 0
    seen = {v for *_, vs in probe.samples for v in vs}
    assert seen == {base_version, next_version}
    wait_until(lambda: versions.current_name() == base, 1, "models/CURRENT to name the base version again")
