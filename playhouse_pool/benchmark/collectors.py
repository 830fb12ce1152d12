"""``--collector``: our pool once more, with a metrics collector attached
and collecting, as the row ``ours+collector`` of S1 and S2.

What is attached is what an operator runs: for ``prometheus`` the
collector of ``playhouse_pool.prometheus`` in a registry of its own, scraped
(the exposition text generated) every ``COLLECT_EVERY`` seconds; for
``otel`` ``playhouse_pool.otel.instrument()`` on an OpenTelemetry SDK
meter provider with an in-memory reader, collected as often (an exporter's
periodic reader does the same work, then sends it); ``both`` attaches the
two. The collections run on a thread of their own inside the timed work,
so their cost is counted, as it would be in a served process.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, List, Optional

from .pools import Adapter, Builder, PeeweeAdapter, Settings
from .target import Target

COLLECTOR_NAMES = {
    'prometheus': 'the Prometheus collector',
    'otel': 'OpenTelemetry (SDK, in-memory reader)',
    'both': 'the Prometheus collector and OpenTelemetry (SDK)'}
COLLECTORS = tuple(COLLECTOR_NAMES)
COLLECT_EVERY = 1.0     # seconds between two scrapes or collections


def _prometheus(db: Any) -> Callable[[], Any]:
    try:
        from prometheus_client import CollectorRegistry, generate_latest
    except ImportError as exc:
        raise ImportError("--collector prometheus needs prometheus_client: "
                          "pip install 'playhouse-pool[prometheus]'") from exc
    from ..prometheus import register
    registry = CollectorRegistry()
    register(db, registry=registry)
    return lambda: generate_latest(registry)


def _otel(db: Any) -> Callable[[], Any]:
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    except ImportError as exc:
        raise ImportError("--collector otel needs the OpenTelemetry SDK: "
                          "pip install opentelemetry-sdk") from exc
    from ..otel import instrument
    reader = InMemoryMetricReader()
    instrument(db, meter_provider=MeterProvider(metric_readers=[reader]),
               pool_name='benchmark')
    return reader.get_metrics_data


def check_available(kind: str) -> None:
    """ImportError naming what to install if ``kind`` cannot run here."""
    if kind in ('prometheus', 'both'):
        import prometheus_client  # noqa: F401
    if kind in ('otel', 'both'):
        import opentelemetry.sdk.metrics  # noqa: F401


class CollectedAdapter(PeeweeAdapter):
    """Our pool with ``kind``'s collectors attached and collecting every
    ``COLLECT_EVERY`` seconds until :meth:`close`."""

    def __init__(self, db: Any, kind: str) -> None:
        super().__init__(db)
        self.collects: List[Callable[[], Any]] = []
        if kind in ('prometheus', 'both'):
            self.collects.append(_prometheus(db))
        if kind in ('otel', 'both'):
            self.collects.append(_otel(db))
        self.collections = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = threading.Thread(
            target=self._collect_often, name='benchmark-collector',
            daemon=True)
        self._thread.start()

    def _collect_often(self) -> None:
        while not self._stop.wait(COLLECT_EVERY):
            self.collect()

    def collect(self) -> None:
        for collect in self.collects:
            collect()
        self.collections += 1

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.collect()              # what is left, as a last scrape would
        super().close()


def with_collector(build: Builder, kind: str) -> Builder:
    """``build`` (ours), with ``kind``'s collectors on each pool built."""
    def build_collected(target: Target, settings: Settings) -> Adapter:
        adapter = build(target, settings)
        assert isinstance(adapter, PeeweeAdapter)
        return CollectedAdapter(adapter.db, kind)
    return build_collected
