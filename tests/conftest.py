"""Shared test fixtures. Ray tests share one small local cluster for the whole session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray (2 CPUs, no dashboard) for every test marked ``ray``; shut down at the end."""
    ray = pytest.importorskip("ray")
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
