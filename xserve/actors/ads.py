"""``AdInventoryActor``: the ads inventory (:class:`xserve.ads.store.AdStore`) as one named Ray actor, a thin shell.

One actor per data directory: the inventory is small (ads, not posts) and every feed asks it once
(``AdsHandleClient`` in :mod:`xserve.deployments.clients`). Writes are logged before they are applied and
acknowledged; a restart replays the log (``<data_dir>/ads/events/``).
"""

from __future__ import annotations

from typing import Any

import ray

from xserve.ads.inventory import AdRefused
from xserve.ads.store import AdStore
from xserve.config import XServeConfig
from xserve.schema import Ad, AdDelivered, AdSlate

__all__ = ["AdInventoryActor"]


# max_restarts=-1: the constructor only replays the log, so a restart always rebuilds the same state
@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=1, allow_out_of_order_execution=True)
class AdInventoryActor:
    def __init__(self, config: XServeConfig) -> None:
        self._store = AdStore.open(config)

    def stats(self) -> dict[str, Any]:
        return self._store.stats()

    def get(self, ad_id: int) -> Ad | None:
        return self._store.get(ad_id)

    def slate(self, viewer_id: int) -> AdSlate:
        return self._store.slate(viewer_id)

    def put(self, ad: Ad) -> Ad:
        return self._store.put(ad)

    def delete(self, ad_id: int) -> tuple[int, str] | None:
        """None once durable, else (status, reason)."""
        try:
            self._store.delete(ad_id)
        except AdRefused as exc:
            return exc.status, str(exc)
        return None

    def deliver(self, delivery: AdDelivered) -> None:
        self._store.deliver(delivery)
