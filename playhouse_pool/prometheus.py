"""Prometheus metrics for pooled databases (``pip install
'playhouse-pool[prometheus]'``).

.. code-block:: python

    from playhouse_pool.prometheus import register
    register(db)        # on prometheus_client's default REGISTRY

Each scrape takes one ``db.pool_stats()`` snapshot per database and exposes
it with a ``database`` label (the database name, password redacted):

===================== ======= ===========================================
``pool_stats()`` key  type    metric (``namespace`` + ``_`` + ...)
===================== ======= ===========================================
``max_connections``   gauge   ``max_connections`` (0: unlimited)
``open``              gauge   ``connections_open``
``in_use``            gauge   ``connections_in_use``
``idle``              gauge   ``connections_idle``
``waiting``           gauge   ``waiting_threads``
``created``           counter ``connections_created_total``
``closed``            counter ``connections_closed_total``
``checkouts``         counter ``checkouts_total``
``timeouts``          counter ``timeouts_total``
``reclaimed``         counter ``connections_reclaimed_total``
``recycled``          counter ``connections_recycled_total``
``recovered``         counter ``statements_recovered_total``
``wait_seconds``      counter ``wait_seconds_total``
``use_seconds``       counter ``use_seconds_total``
``connect_seconds``   counter ``connect_seconds_total``
``connect_errors``    counter ``connect_errors_total``
``io_timeouts``       counter ``io_timeouts_total``
===================== ======= ===========================================

and three histograms (``_bucket`` with ``le``, ``_sum``, ``_count``), in
seconds, with buckets from 10 us to 50 s (``playhouse_pool.events.BUCKETS``):

============================ ===============================================
metric                       one observation per
============================ ===============================================
``wait_time_seconds``        checkout served: how long it took (waiting for
                             a free connection, checks, any connect)
``use_time_seconds``         check-in: how long the connection was held
``create_time_seconds``      connection opened: how long the connect took
============================ ===============================================

The histograms count from the moment the collector is created (the counters
from the pool's start); they come from the pool's events
(``playhouse_pool.events.PoolTimes``), shared with OpenTelemetry.
"""
import math
from typing import TYPE_CHECKING, Any, Iterator, List, Optional, Tuple

from ._redact import redact
from .events import PoolTimes, events_of

if TYPE_CHECKING:  # pragma: no cover
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

__all__ = ['HISTOGRAMS', 'METRICS', 'PoolCollector', 'register']

#: ``(pool_stats() key, metric name without namespace and _total, type,
#: help)`` for every key ``pool_stats()`` returns.
METRICS: Tuple[Tuple[str, str, str, str], ...] = (
    ('max_connections', 'max_connections', 'gauge',
     'Most connections the pool may open (0: unlimited).'),
    ('open', 'connections_open', 'gauge',
     'Open connections (in use + idle).'),
    ('in_use', 'connections_in_use', 'gauge', 'Connections checked out.'),
    ('idle', 'connections_idle', 'gauge', 'Connections idle in the pool.'),
    ('waiting', 'waiting_threads', 'gauge',
     'Threads waiting for a connection.'),
    ('created', 'connections_created', 'counter', 'Connections opened.'),
    ('closed', 'connections_closed', 'counter', 'Connections closed.'),
    ('checkouts', 'checkouts', 'counter', 'Connections checked out.'),
    ('timeouts', 'timeouts', 'counter',
     'Checkouts refused with MaxConnectionsExceeded.'),
    ('reclaimed', 'connections_reclaimed', 'counter',
     'Connections reclaimed from threads that ended without close().'),
    ('recycled', 'connections_recycled', 'counter',
     'Connections replaced because recycle() was called.'),
    ('recovered', 'statements_recovered', 'counter',
     'First statements run again on another connection (the first one '
     'was dead).'),
    ('wait_seconds', 'wait_seconds', 'counter',
     'Total seconds threads spent waiting for a connection.'),
    ('use_seconds', 'use_seconds', 'counter',
     'Total seconds connections were held (counted at check-in).'),
    ('connect_seconds', 'connect_seconds', 'counter',
     'Total seconds the connects that succeeded took.'),
    ('connect_errors', 'connect_errors', 'counter',
     'Connect attempts that failed (retries included).'),
    ('io_timeouts', 'io_timeouts', 'counter',
     "The pool's own connects, pings, resets and closes that did not end "
     'within their deadline.'),
)

#: ``(PoolTimes attribute, metric name without namespace, help)`` of the
#: histograms.
HISTOGRAMS: Tuple[Tuple[str, str, str], ...] = (
    ('wait', 'wait_time_seconds',
     'Seconds each checkout took to obtain a connection.'),
    ('use', 'use_time_seconds',
     'Seconds each connection was held, from checkout to check-in.'),
    ('connect', 'create_time_seconds',
     'Seconds each new connection took to open.'),
)


def _client() -> Any:
    try:
        from prometheus_client import core
    except ImportError as exc:
        raise ImportError(
            "playhouse_pool.prometheus needs prometheus_client: "
            "pip install 'playhouse-pool[prometheus]'") from exc
    return core


def _label(db: Any) -> str:
    return redact(str(db.database))


class PoolCollector:
    """A custom Prometheus collector for the pools of ``databases``.

    Register it once per registry (``REGISTRY.register(PoolCollector(db1,
    db2))``); to export several collectors to one registry, give each its
    own ``namespace``. Database names must be distinct.
    """

    def __init__(self, *databases: Any,
                 namespace: str = 'playhouse_pool') -> None:
        self._core = _client()
        from prometheus_client.utils import floatToGoString
        self._go_float = floatToGoString
        if not databases:
            raise TypeError('PoolCollector needs at least one database.')
        labels = [_label(db) for db in databases]
        if len(set(labels)) != len(labels):
            raise ValueError('PoolCollector: two databases have the same '
                             'name: %r' % sorted(labels))
        self.databases = databases
        self.namespace = namespace
        self._times: List[PoolTimes] = [events_of(db).times()
                                        for db in databases]

    def _families(self) -> List[Any]:
        # Gauge- and CounterMetricFamily in METRICS order, then
        # HistogramMetricFamily in HISTOGRAMS order, without samples.
        core = self._core
        families = []
        for _key, name, kind, doc in METRICS:
            cls = (core.GaugeMetricFamily if kind == 'gauge'
                   else core.CounterMetricFamily)
            families.append(cls('%s_%s' % (self.namespace, name), doc,
                                labels=['database']))
        for _attr, name, doc in HISTOGRAMS:
            families.append(core.HistogramMetricFamily(
                '%s_%s' % (self.namespace, name), doc, labels=['database']))
        return families

    def describe(self) -> List['Metric']:
        """The metric families, without samples (lets a registry check
        for duplicate names without taking a snapshot)."""
        return self._families()

    def collect(self) -> Iterator['Metric']:
        """One ``pool_stats()`` snapshot per database, as metric
        families."""
        families = self._families()
        histograms = families[len(METRICS):]
        for db, times in zip(self.databases, self._times):
            stats = db.pool_stats()
            label = [_label(db)]
            for (key, _name, _kind, _doc), family in zip(METRICS, families):
                family.add_metric(label, stats[key])
            for (attr, _name, _doc), family in zip(HISTOGRAMS, histograms):
                histogram = getattr(times, attr)
                counts, total = histogram.snapshot()
                family.add_metric(label, self._buckets(histogram.bounds,
                                                       counts), total)
        yield from families

    def _buckets(self, bounds: Tuple[float, ...],
                 counts: List[int]) -> List[Tuple[str, float]]:
        # Prometheus buckets count every value up to their bound (le), the
        # bound written as prometheus_client writes its own.
        buckets: List[Tuple[str, float]] = []
        running = 0
        for bound, count in zip(bounds + (math.inf,), counts):
            running += count
            buckets.append((self._go_float(bound), running))
        return buckets


def register(*databases: Any, registry: Optional['CollectorRegistry'] = None,
             namespace: str = 'playhouse_pool') -> PoolCollector:
    """Register a :class:`PoolCollector` for ``databases`` on ``registry``
    (default: prometheus_client's ``REGISTRY``) and return it."""
    collector = PoolCollector(*databases, namespace=namespace)
    if registry is None:
        from prometheus_client import REGISTRY
        registry = REGISTRY
    registry.register(collector)
    return collector
