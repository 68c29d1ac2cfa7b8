"""Prometheus figures of a replica's shared state, read when scraped.

For the gateway's registry (``registry.register(SharedCollector(lambda: router))``):

* ``costroute_shared_connected`` — 1 while the store answers, 0 while degraded;
* ``costroute_shared_outages_total`` — times the store was lost;
* ``costroute_shared_degraded_seconds`` — how long the current outage has lasted (0);
* ``costroute_shared_pending_ops`` — updates queued for the store;
* ``costroute_shared_reconciled_usd_total`` — spend booked during outages and since
  added to the shared ledger;
* ``costroute_shared_remote_opens_total`` — breaker openings learned from other
  replicas.

Nothing is yielded for a router without shared state. Labels: ``backend`` and the
masked store URL only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from router.live import Router

__all__ = ["SharedCollector"]


class SharedCollector(Collector):
    """The shared-state figures of the router ``router()`` returns (see the module)."""

    def __init__(self, router: Callable[[], Router]) -> None:
        self._router = router

    def collect(self) -> Iterator[Metric]:
        router = self._router()
        status = router.shared_status()
        if status is None:
            return
        labels = ["backend", "store"]
        values = [status.backend, status.url or "-"]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric(values, value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc, labels=labels)
            c.add_metric(values, value)
            return c

        degraded = 0.0
        if status.degraded_since is not None:
            degraded = max(0.0, router.clock() - status.degraded_since)
        yield gauge(
            "costroute_shared_connected",
            "1 while the shared state store answers, 0 while this replica routes on its own",
            1.0 if status.connected else 0.0,
        )
        yield counter(
            "costroute_shared_outages", "Times the shared state store was lost", status.outages
        )
        yield gauge(
            "costroute_shared_degraded_seconds",
            "How long the current loss of the store has lasted (0 while connected)",
            degraded,
        )
        yield gauge(
            "costroute_shared_pending_ops",
            "Updates queued for the shared state store",
            status.pending_ops,
        )
        yield counter(
            "costroute_shared_reconciled_usd",
            "USD booked while the store was lost and since added to the shared ledger",
            status.reconciled_usd,
        )
        yield counter(
            "costroute_shared_remote_opens",
            "Breaker openings learned from other replicas",
            status.remote_opens,
        )
