"""Shared test fixtures and helpers, and the rules that keep the suite inside its CI budget.

CI (``.ci/run``: a fresh clone, 2 cores) runs the whole suite in at most 9 minutes. Rules for every test:

* **Share the session's Ray and app.** Ray tests use the one local cluster (``ray_cluster``); a test
  that needs the whole For You app over HTTP uses ``served_app`` (one app for the session, over a copy
  of ``tiny_world``), not a Serve app of its own. Live settings change through
  ``served_app.reconfigure`` and are put back; a test that writes uses ids of its own. A second app is
  for a test that needs what the shared one cannot be (a kill of the whole process, another data
  directory): its module docstring says why.
* **Wait on a condition, never on a sleep**: ``wait_until(predicate, timeout_s, what)`` polls and, on
  timeout, fails naming what it waited for. After ``ray.kill`` wait until the actor is dead
  (``actor_is_dead``) before relying on it being gone.
* **Size worlds and models to the test.** ``tiny_world`` is 200 users, 3,000 posts and models with
  hash tables sized to it (50 MB, trained in seconds); unit tests build data with the factories.
* **Long matrices go to scripts and benchmarks.** CI runs one representative case of a slow end-to-end
  path (every fault, every fuzz example): the test's docstring names the script or environment variable
  that runs the rest.
* **Budgets.** A test's call over ``TEST_BUDGET_S`` or its setup (a shared app, a trained world) over
  ``SETUP_BUDGET_S`` is named at the end of every run, with the slowest tests (the run does not fail).
  A test that must take longer says so with ``@pytest.mark.budget(seconds, reason=...)``.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import settings

# a property's examples are checked for what they compute, never for how long they take: Hypothesis's default
# 200 ms deadline per example fails at random on a loaded 2-core machine (timing lives in benchmarks/)
settings.register_profile("xserve", deadline=None)
settings.load_profile("xserve")

T = TypeVar("T")

TEST_BUDGET_S = 20.0  # one test's call
SETUP_BUDGET_S = 60.0  # one test's setup, which carries the module- and session-scoped fixtures it starts

# The tiny demo world sized to its tests: hash tables of 4k/40k rows instead of 100k/1M (66 MB of
# checkpoints instead of 1.2 GB, loaded by every app start; the content table's default 100k rows would
# add 94 MB for the synthetic world's ~140 words), a few hundred training examples, and 2 retrieval and 2
# Thunder shards instead of 4 (fewer actor processes to start). An app serving it needs the same
# retrieval.num_shards (the index is built with it): in-process configs merge TINY_WORLD, an `xserve serve`
# subprocess gets `tiny_world_env()`.
TINY_WORLD = {
    "serving": {"demo_world": "tiny", "bootstrap_train_examples": 128, "bootstrap_train_epochs": 1},
    "train": {"epochs": 1, "batch_size": 32, "ranker_positives": 32, "ranker_negatives": 32},
    "phoenix": {"user_vocab": 4_001, "post_vocab": 40_009, "author_vocab": 4_001, "content_vocab": 4_001},
    "retrieval": {"num_shards": 2},
    "thunder": {"num_shards": 2},
}

SERVED_APP = "xserve-test"
SERVED_API_KEY = "edge-test-key"


# --------------------------------------------------------------------------- helpers


def wait_until(predicate: Callable[[], T], timeout_s: float, what: str, *, interval_s: float = 0.05,
               retry_on: tuple[type[BaseException], ...] = ()) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    An exception of a type in ``retry_on`` counts as "not yet". After ``timeout_s`` the test fails
    with ``what`` (say what should have happened: "the killed shard to be dead") and the last answer.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            last: Any = predicate()
        except retry_on as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout_s:g} s for {what}; last answer: {last!r}")
        time.sleep(interval_s)


def actor_is_dead(actor: Any, timeout_s: float = 10.0) -> bool:
    """Whether a call to ``actor`` fails because the actor is dead (``ray.kill`` only asks it to die)."""
    import ray

    try:
        ray.get(actor.__ray_ready__.remote(), timeout=timeout_s)
    except ray.exceptions.ActorDiedError:
        return True
    except (ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
        return False  # restarting, or too busy to say
    return False


def tiny_world_env() -> dict[str, str]:
    """``TINY_WORLD`` as ``XSERVE__SECTION__FIELD`` variables, for an ``xserve serve`` over a copy of ``tiny_world``."""
    return {
        f"XSERVE__{section.upper()}__{name.upper()}": value if isinstance(value, str) else json.dumps(value)
        for section, fields in TINY_WORLD.items()
        for name, value in fields.items()
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_world(template, dest) -> str:
    """A fresh copy of the ``tiny_world`` at ``dest`` (its own actors: they are named after the path).

    The model files (only read when serving) are linked, not copied; the models directory is the copy's own,
    so a test that writes model versions into it (tests/loop/test_hot_swap.py) leaves the template alone.
    """
    template, dest = Path(template), Path(dest)
    shutil.copytree(template, dest, ignore=shutil.ignore_patterns("models"))
    (dest / "models").mkdir()
    for model in (template / "models").iterdir():
        (dest / "models" / model.name).symlink_to(model)
    return str(dest)


def served_app_config(data_dir: str):
    """The session app's config: ``TINY_WORLD`` with 2 user-store shards, an API key, small admission and
    Serve queue limits (2 feeds, 4 writes in flight; 8 requests per replica, 4 queued at the proxy), no
    CPU reservations, so the idle app never keeps a later test's actors from starting, cold start and
    the negative-feedback multiplier off (their module turns them on), and no time gap between ads."""
    from xserve.config import MixerConfig, load_config

    return load_config(
        environ={},
        overrides={
            **TINY_WORLD,
            "storage": {"data_dir": data_dir, "fsync": False},
            "serving": {
                **TINY_WORLD["serving"],
                "num_user_shards": 2,
                "api_key": SERVED_API_KEY,
                "max_inflight_feeds": 2,
                "max_inflight_writes": 4,
                "retry_after_s": 1.0,
                "ingress_max_ongoing_requests": 8,
                "ingress_max_queued_requests": 4,
                "ingress_num_cpus": 0,
                "retrieval_num_cpus": 0,
            },
            "ranker_serving": {"num_cpus": 0},
            # the January weighted scorer, whose explain numbers the session's tests recompute by hand; the value
            # model's own end-to-end test (tests/deployments/test_ranking_http.py) switches to it live and back
            "scoring": {"scorer": "weighted"},
            # stage timeouts tripled, as the chaos run does: on a loaded 2-core machine the defaults time out
            # the catalog's hydrators, and the safety stages then fail closed and empty a feed without any fault
            "mixer": {name: getattr(MixerConfig(), name) * 3 for name in STAGE_TIMEOUTS},
            # the issue-17 score changes are off, so the session's feeds score as the January product that
            # tests/deployments/test_ingress.py checks; tests/deployments/test_feed_sources.py turns them on
            "cold_start": {"enabled": False},
            "negative_feedback": {"enabled": False},
            # no time gap between ads, so tests/deployments/test_ads_api.py's second page, a moment after the first,
            # may carry one (the inventory is empty outside that module: no other feed has ads)
            "ads": {"min_gap_ms": 0},
        },
    )


STAGE_TIMEOUTS = ("query_hydrator_timeout_s", "source_timeout_s", "hydrator_timeout_s", "scorer_timeout_s",
                  "filter_timeout_s", "request_timeout_s")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray (2 CPUs, no dashboard) for every test marked ``ray``; shut down at the end.

    ``address="local"``: always a new cluster of its own, never one that ``ray start`` left on the machine.
    """
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
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
    """A data directory holding the tiny demo world and its models (``TINY_WORLD``), prepared once a session.

    Read-only: a test that serves or writes copies it first (:func:`copy_world`). ~10 s here.
    """
    from xserve.config import load_config
    from xserve.synth.bootstrap import prepare_data_dir

    path = tmp_path_factory.mktemp("tiny-world")
    config = load_config(environ={}, overrides={**TINY_WORLD, "storage": {"data_dir": str(path), "fsync": False}})
    prepare_data_dir(config, progress=False)
    return path


@dataclass
class ServedApp:
    """The session's For You app on Ray Serve: its config (``served_app_config``) and base URL."""

    config: Any  # XServeConfig
    url: str
    auth: dict[str, str]  # the header that opens writes and admin routes

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply the ingress's live settings (``user_config``, as in serve_config.yaml); returns once applied.
        ``{}`` puts the config's own settings back."""
        from ray import serve

        from xserve.app import build_app

        serve.run(build_app(self.config, prepare=False, user_config=user_config), name=SERVED_APP, route_prefix="/")


@pytest.fixture(scope="session")
def served_app(ray_cluster, tiny_world, tmp_path_factory) -> ServedApp:
    """The For You app served over HTTP for the whole session (starting it costs 15-30 s here).

    The session's ``ray.shutdown`` takes it down (``serve.delete`` would only add seconds).
    """
    import httpx
    from ray import serve

    from xserve import clock
    from xserve.actors.naming import ActorNames
    from xserve.actors.stateful import start_all
    from xserve.app import build_app, served_config

    config = served_app_config(copy_world(tiny_world, tmp_path_factory.mktemp("served") / "data"))
    served = served_config(config)
    start_all(served, ActorNames.of(served.storage.data_dir), clock.now_ms())  # as `xserve serve`: beside Serve's start
    serve.start(http_options={"host": "127.0.0.1", "port": free_port()})  # a Serve already running keeps its port
    serve.run(build_app(config, prepare=False), name=SERVED_APP, route_prefix="/")
    port = ray_cluster.get(serve.context._get_global_client()._controller.get_http_config.remote()).port
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, timeout=30) as http:
        wait_until(lambda: http.get("/healthz").status_code == 200, 120, "the served app's /healthz to answer 200",
                   interval_s=0.5, retry_on=(httpx.HTTPError,))
    return ServedApp(config, url, {"Authorization": f"Bearer {SERVED_API_KEY}"})


# --------------------------------------------------------------------------- budgets

_BUDGETS = pytest.StashKey[dict]()  # nodeid -> the call budget of a test marked `budget`


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "budget(seconds, reason): this test's call may take up to `seconds` (an end-to-end path CI keeps)"
    )


def pytest_collection_modifyitems(config, items):
    config.stash[_BUDGETS] = {
        item.nodeid: float(marker.args[0]) for item in items if (marker := item.get_closest_marker("budget"))
    }


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The slowest tests, and every test over its budget (reported; the run's outcome is unchanged)."""
    durations: dict[str, dict[str, float]] = {}  # nodeid -> {"setup": s, "call": s, "teardown": s}
    for reports in terminalreporter.stats.values():  # as pytest's own --durations reads them
        for report in reports:
            if getattr(report, "when", None) and hasattr(report, "duration"):
                durations.setdefault(report.nodeid, {})[report.when] = report.duration
    if not durations:
        return
    budgets = config.stash.get(_BUDGETS, {})
    over = []
    for nodeid, d in durations.items():
        for when, budget in (("setup", SETUP_BUDGET_S), ("call", budgets.get(nodeid, TEST_BUDGET_S)),
                             ("teardown", TEST_BUDGET_S)):
            if d.get(when, 0.0) > budget:
                over.append(f"{d[when]:7.1f} s {when:<8} {nodeid} (budget {budget:g} s)")
    total = {nodeid: sum(d.values()) for nodeid, d in durations.items()}
    tr = terminalreporter
    tr.section("test time (budgets: tests/conftest.py)")
    tr.write_line(f"{sum(total.values()):.0f} s in {len(total)} tests; the slowest (setup + call + teardown):")
    for nodeid in sorted(total, key=total.__getitem__, reverse=True)[:10]:
        tr.write_line(f"{total[nodeid]:7.1f} s  {nodeid}")
    if over:
        tr.write_line(f"over budget ({len(over)}): share the session app, wait on conditions, shrink the data, "
                      "or mark the test budget(seconds, reason=...)")
        for line in over:
            tr.write_line(line)
