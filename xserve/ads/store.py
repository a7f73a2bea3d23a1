"""``AdStore``: the ads inventory with its write-ahead log (pure; :mod:`xserve.actors.ads` is a shell around it).

On open it replays ``<data_dir>/ads/events/`` (``DataDirLayout.ads_events``) into an
:class:`~xserve.ads.inventory.AdInventory`, so a restarted store has every acknowledged write. Each write
is logged before it is applied and acknowledged: puts and deletes with an fsync (``storage.fsync``), as the
user store's writes; deliveries too, since they are the budgets' counters (they are written after the feed
is returned, so the fsync never delays a feed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xserve.ads.inventory import AdInventory
from xserve.clock import now_ms
from xserve.config import XServeConfig
from xserve.schema import Ad, AdDelivered, AdEvent, AdSlate
from xserve.storage.layout import DataDirLayout
from xserve.storage.log.event_log import EventLog

__all__ = ["AdStore"]


class AdStore:
    """Log, then apply, every write to an :class:`AdInventory`."""

    def __init__(self, inventory: AdInventory, log: EventLog, clock_ms: Callable[[], int] = now_ms) -> None:
        self.inventory = inventory
        self._log = log
        self._clock_ms = clock_ms
        self.replayed = 0

    @classmethod
    def open(cls, config: XServeConfig, clock_ms: Callable[[], int] = now_ms) -> AdStore:
        log = EventLog(
            DataDirLayout(config.storage.data_dir).ads_events, writer=True, fsync=config.storage.fsync,
            event_type=AdEvent, lock_wait_s=config.storage.lock_wait_s,
        )
        store = cls(AdInventory(config.ads), log, clock_ms)
        store.replayed = log.replay(store.inventory.apply)
        return store

    def stats(self) -> dict[str, Any]:
        return {"inventory": repr(self.inventory), "replayed": self.replayed}

    def get(self, ad_id: int) -> Ad | None:
        return self.inventory.get(ad_id)

    def slate(self, viewer_id: int) -> AdSlate:
        return self.inventory.slate(viewer_id)

    def put(self, ad: Ad) -> Ad:
        """Store ``ad`` (a replacement keeps the counters); returns it as stored, once durable."""
        event = self.inventory.put(ad)
        self._write(event)
        return event.ad

    def delete(self, ad_id: int) -> None:
        """Raises :class:`AdRefused` (404) for an unknown ad."""
        self._write(self.inventory.delete(ad_id, self._clock_ms()))

    def deliver(self, delivery: AdDelivered) -> None:
        if delivery.ad_ids:
            self._write(delivery)

    def _write(self, event: AdEvent) -> None:
        self._log.append([event], self._clock_ms())
        self.inventory.apply(event)

    def close(self) -> None:
        self._log.close()

