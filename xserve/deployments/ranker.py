"""``Ranker``: the Serve deployment that scores candidates (a thin shell over ``RankerRunner``).

Concurrent ``rank`` calls from different users are collected by
``@serve.batch`` and scored in one runner call: their contexts are encoded in
one forward (cache misses only) and their candidate chunks share forwards.
Batches form only while requests overlap, so ``max_ongoing_requests`` must
exceed ``max_batch_size``. The runner keeps each user's context keys/values in
its paged cache, so a user's next page or refresh skips the context. Batch
size and wait are live-tunable through ``user_config`` (``reconfigure``).

With ``ranker_serving.device = "auto"`` (the default) a replica that Ray gives a
GPU (``num_gpus``; ``serve_config.yaml`` asks for one) runs the same code on it in
bfloat16, and one without on the CPU (``runner.resolve_device``).
``ranker_serving.backend = "vllm"`` serves through the optional vLLM adapter
instead (``xserve.phoenix.serving.vllm_backend``).

With several replicas, each has its own cache: ``ranker_options`` names Serve's request router
``ViewerAffinityRouter`` (``ranker_router.py``), which sends a viewer's requests back to the replica
that encoded its context. Each response names its replica and how much of its context came from the
cache, which the ingress counts (``RankerHandleClient.context_reuse``, ``GET /v1/admin/stats``).

**Hot swap.** A replica follows the data directory's ``models/CURRENT``
(``xserve.storage.model_versions``): a thread re-reads it every ``loop.model_poll_s``
and, when it names another version, loads that ranker beside the live one and
swaps them in one assignment (``xserve.storage.version_poll.VersionFollower``).
A batch takes the live backend once, so every request is scored by exactly one
version (named in its ``RankResponse.model_version``), with that version's own
K/V cache (each runner's cache is keyed by its version). No restart, no failed
request; a version that fails to load is retried and the live one keeps serving.
``loop.model_poll_s = 0`` pins the replica to ``ranker_serving.checkpoint``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import msgspec
from ray import serve
from ray.serve.config import RequestRouterConfig
from ray.serve.exceptions import RayServeException

from xserve.config import XServeConfig, merge_config
from xserve.schema import RankRequest, RankResponse
from xserve.storage.model_versions import ModelVersions
from xserve.storage.version_poll import VersionFollower

__all__ = ["Ranker", "make_ranker_backend", "ranker_follower", "ranker_options"]


def make_ranker_backend(config: XServeConfig) -> Any:
    """The object whose ``rank(list[RankRequest]) -> list[RankResponse]`` does the work."""
    if config.ranker_serving.backend == "vllm":
        from xserve.phoenix.serving.vllm_backend import VLLMRankerBackend

        return VLLMRankerBackend.from_config(config)
    from xserve.phoenix.serving.runner import RankerRunner

    return RankerRunner.from_config(config)


def ranker_follower(config: XServeConfig) -> VersionFollower[Any]:
    """The backend of the data directory's current model version, following ``models/CURRENT``
    (no version yet, or following off: the backend ``config`` names)."""
    versions = ModelVersions(config.storage.data_dir)
    follow = config.loop.model_poll_s > 0

    def load(name: str | None) -> Any:
        if name is None:
            return make_ranker_backend(config)
        return make_ranker_backend(merge_config(config, {"ranker_serving": {"checkpoint": str(versions.ranker_path(name))}}))

    return VersionFollower(versions.current_name if follow else lambda: None, load)


def ranker_options(config: XServeConfig) -> dict[str, Any]:
    """``Ranker.options(**ranker_options(cfg))``: replicas, concurrency, resources and the request router."""
    s = config.ranker_serving
    if s.affinity_max_imbalance < 0:
        raise ValueError(f"ranker_serving.affinity_max_imbalance must be >= 0, got {s.affinity_max_imbalance}")
    options: dict[str, Any] = {
        "num_replicas": s.num_replicas,
        "max_ongoing_requests": s.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": s.num_cpus, "num_gpus": s.num_gpus},
    }
    if s.request_router == "viewer_affinity":
        from xserve.deployments.ranker_router import ViewerAffinityRouter

        options["request_router_config"] = RequestRouterConfig(
            request_router_class=ViewerAffinityRouter,
            request_router_kwargs={"max_imbalance": s.affinity_max_imbalance},
        )
    return options


def _replica_id() -> str:
    try:
        return serve.get_replica_context().replica_id.unique_id
    except RayServeException:  # local testing mode sets no replica context
        return ""


@serve.deployment(name="Ranker")
class Ranker:
    def __init__(self, config: XServeConfig) -> None:
        self._models = ranker_follower(config)
        self._replica = _replica_id()  # stamped on each response
        self._stop = threading.Event()
        if config.loop.model_poll_s > 0:  # off the request path: a load never delays a batch
            threading.Thread(target=self._follow, args=(config.loop.model_poll_s,), name="ranker-version-poll",
                             daemon=True).start()
        self._batches = 0  # batches run by this replica
        self._requests = 0  # requests in them (mean batch size = requests / batches)
        self._largest_batch = 0
        self._apply(config.ranker_serving.max_batch_size, config.ranker_serving.batch_wait_timeout_s)

    def _follow(self, poll_s: float) -> None:
        while not self._stop.wait(poll_s):
            self._models.poll()

    @property
    def _backend(self) -> Any:
        """The live version's backend (take it once per batch)."""
        return self._models.live.value

    def _apply(self, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        if max_batch_size < 1 or batch_wait_timeout_s < 0:
            raise ValueError(f"ranker batching: max_batch_size must be >= 1 and batch_wait_timeout_s >= 0, "
                             f"got {max_batch_size} and {batch_wait_timeout_s}")
        self._batching = {"max_batch_size": max_batch_size, "batch_wait_timeout_s": batch_wait_timeout_s}
        self._rank_batch.set_max_batch_size(max_batch_size)
        self._rank_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """``user_config: {max_batch_size, batch_wait_timeout_s}`` (either may be left out)."""
        merged = self._batching | dict(user_config)
        self._apply(int(merged["max_batch_size"]), float(merged["batch_wait_timeout_s"]))

    async def rank(self, req: RankRequest) -> RankResponse:
        """Score one request; concurrent calls are batched. A bad request fails alone, with its reason."""
        out = await self._rank_batch(req)
        if isinstance(out, Exception):
            raise out
        return msgspec.structs.replace(out, replica=self._replica)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.002)
    async def _rank_batch(self, requests: list[RankRequest]) -> list[RankResponse | ValueError]:
        # Off the event loop, so the replica keeps accepting (and batching) requests meanwhile;
        # serve.batch runs one batch at a time, so the runner is never entered twice.
        self._batches += 1
        self._requests += len(requests)
        self._largest_batch = max(self._largest_batch, len(requests))
        return await asyncio.to_thread(self._rank_isolated, requests)

    def _rank_isolated(self, requests: list[RankRequest]) -> list[RankResponse | ValueError]:
        """Rank the valid requests together; an invalid one gets its error back instead of failing the
        batch (serve.batch would hand one exception to every caller of the batch)."""
        backend = self._backend  # once: the whole batch is scored by one model version
        errors: dict[int, ValueError] = {}
        for i, r in enumerate(requests):
            try:
                backend.validate(r)
            except ValueError as exc:
                errors[i] = exc
        results = iter(backend.rank([r for i, r in enumerate(requests) if i not in errors]))
        return [errors[i] if i in errors else next(results) for i in range(len(requests))]

    def stats(self) -> dict[str, Any]:
        """Batching and cache counters of this replica (batches, requests, hits, misses, evictions, ...)."""
        out: dict[str, Any] = {"replica": self._replica, "batches": self._batches, "requests": self._requests,
                               "largest_batch": self._largest_batch, "model": self._models.stats(),
                               "model_version": getattr(self._backend, "version", "")}
        cache = getattr(self._backend, "cache", None)
        if cache is not None:
            out |= cache.stats.as_dict()
        return out
