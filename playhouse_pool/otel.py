"""OpenTelemetry metrics for pooled databases, in the semantic conventions for
database client connection pools (``pip install
'playhouse-pool[opentelemetry]'``; needs only ``opentelemetry-api``).

.. code-block:: python

    from playhouse_pool.otel import instrument
    instrument(db)      # on the global meter provider

========================================== ============= =====================
instrument                                 unit          value
========================================== ============= =====================
``db.client.connection.count``             {connection}  ``in_use`` (``used``),
                                                         ``idle`` (``idle``)
``db.client.connection.idle.max``          {connection}  ``max_connections``
``db.client.connection.idle.min``          {connection}  ``min_connections``
``db.client.connection.max``               {connection}  ``max_connections``
``db.client.connection.pending_requests``  {request}     ``waiting``
``db.client.connection.timeouts``          {timeout}     ``timeouts``
``db.client.connection.create_time``       s             each connect
``db.client.connection.wait_time``         s             each checkout
``db.client.connection.use_time``          s             each check-in
========================================== ============= =====================

The first five are UpDownCounters and ``timeouts`` a Counter, observed from
``pool_stats()`` at each collection (asynchronous instruments); the last
three are Histograms fed by the pool's events
(``playhouse_pool.events.PoolTimes``, shared with Prometheus), counting from
``instrument()`` on. Every point carries ``db.client.connection.pool.name``;
``count`` also ``db.client.connection.state``.

What ``idle.max`` and ``idle.min`` mean here: this pool has no cap on idle
connections of its own, so at most ``max_connections`` may be idle (all of
them); it closes idle connections (``idle_timeout``) only down to
``min_connections`` open ones, so that many may stay idle. With
``max_connections`` unlimited, ``max`` and ``idle.max`` have no point.
"""
import logging
import threading
import weakref
from typing import Any, Callable, Dict, List, Optional, Tuple

from ._otel_batch import Batch
from ._redact import redact
from .events import BUCKETS, Tap, TimeHistogram, events_of

__all__ = ['PoolInstruments', 'default_pool_name', 'instrument']

logger = logging.getLogger('playhouse_pool.otel')

POOL_NAME = 'db.client.connection.pool.name'
STATE = 'db.client.connection.state'

# (name, unit, description) as the conventions define them.
COUNT = ('db.client.connection.count', '{connection}',
         'The number of connections that are currently in state described '
         'by the `state` attribute.')
IDLE_MAX = ('db.client.connection.idle.max', '{connection}',
            'The maximum number of idle open connections allowed.')
IDLE_MIN = ('db.client.connection.idle.min', '{connection}',
            'The minimum number of idle open connections allowed.')
MAX = ('db.client.connection.max', '{connection}',
       'The maximum number of open connections allowed.')
PENDING_REQUESTS = ('db.client.connection.pending_requests', '{request}',
                    'The number of current pending requests for an open '
                    'connection.')
TIMEOUTS = ('db.client.connection.timeouts', '{timeout}',
            'The number of connection timeouts that have occurred trying to '
            'obtain a connection from the pool.')
CREATE_TIME = ('db.client.connection.create_time', 's',
               'The time it took to create a new connection.')
WAIT_TIME = ('db.client.connection.wait_time', 's',
             'The time it took to obtain an open connection from the pool.')
USE_TIME = ('db.client.connection.use_time', 's',
            'The time between borrowing a connection and returning it to the '
            'pool.')

# (value, attributes) of an asynchronous instrument's points.
_Points = List[Tuple[int, Dict[str, str]]]

# The instruments of each meter provider (and the pools they report).
_registry: 'weakref.WeakKeyDictionary[Any, _MeterInstruments]' = (
    weakref.WeakKeyDictionary())
_strong_registry: Dict[int, Tuple[Any, '_MeterInstruments']] = {}
_registry_lock = threading.Lock()


def _api() -> Any:
    try:
        from opentelemetry import metrics
    except ImportError as exc:
        raise ImportError(
            "playhouse_pool.otel needs opentelemetry-api: "
            "pip install 'playhouse-pool[opentelemetry]'") from exc
    return metrics


def default_pool_name(db: Any) -> str:
    """The name the conventions suggest for a pool that has none:
    ``host:port/database`` (``host/database`` without a port, the database
    alone without a host, as for SQLite), any password redacted.

    Raises ``ValueError`` for a deferred database (no name yet).
    """
    if getattr(db, 'deferred', False) or db.database is None:
        raise ValueError('The database is not initialized (deferred): call '
                         'init() first, or give instrument() a pool_name.')
    params = getattr(db, 'connect_params', {}) or {}
    host, port = params.get('host'), params.get('port')
    name = str(db.database)
    if isinstance(host, str) and host:
        if isinstance(port, (int, str)) and str(port):
            host = '%s:%s' % (host, port)
        name = '%s/%s' % (host, name)
    return redact(name)


class PoolInstruments:
    """One database reported through one meter provider: what
    :func:`instrument` returns. :meth:`close` stops reporting it."""

    def __init__(self, db: Any, pool_name: str,
                 instruments: '_MeterInstruments') -> None:
        self.pool_name = pool_name
        self._db = weakref.ref(db)
        self._instruments = instruments
        self.attributes = {POOL_NAME: pool_name}
        self.idle = {POOL_NAME: pool_name, STATE: 'idle'}
        self.used = {POOL_NAME: pool_name, STATE: 'used'}
        self._closed = False
        self._dropped_reported = 0
        times = events_of(db).times()
        self._feeds: List[Tuple[TimeHistogram, Tap, Batch]] = [
            (source, source.tap(), Batch(histogram, self.attributes))
            for source, histogram in (
                (times.connect, instruments.create_time),
                (times.wait, instruments.wait_time),
                (times.use, instruments.use_time))]

    @property
    def live(self) -> bool:
        return not self._closed and self._db() is not None

    def _observe(self) -> Optional[Tuple[Any, Dict[str, Any]]]:
        """Record the times waiting for this collection; (db, a
        pool_stats() snapshot), or None if this pool reports no more."""
        db = self._db()
        if db is None or self._closed:
            return None
        self._record_times()
        return db, db.pool_stats()

    def _record_times(self) -> None:
        # Why the histograms are recorded here, at collection, and not at
        # each event: the SDK's Histogram.record() costs 6-10 us of CPU
        # (attribute checks and hashing, a Measurement object, locks); at
        # each checkout and check-in it would slow requests by far more
        # than the 5% the pool allows its metrics. So the pool's events go
        # to lock-free buffers (events.TimeHistogram, a deque append) and
        # the values are handed over here, each with its own value, into the
        # SDK's histogram, as if recorded at its event: same counts, sums,
        # buckets and min/max, whatever aggregation or view the SDK applies.
        # (Exemplars differ: see _otel_batch.)
        #
        # None is lost or late: the SDK (SynchronousMeasurementConsumer.
        # collect) runs every asynchronous instrument's callback, these
        # included, before it reads the reader's storage, in the same
        # collection; a synchronous record() goes to every reader's storage
        # at once. So the values recorded here are in this reader's
        # collection, and in the next one of any other reader: exactly where
        # recording at the event would have put them. Every callback calls
        # this (the first finds the values, the others what arrived
        # meanwhile), so it does not matter which runs first, or if a view
        # drops one of the instruments. Values wait at most
        # events.TAP_CAPACITY per histogram: a meter provider that never
        # collects (the API's no-op one) costs that much memory, and what
        # does not fit is dropped and logged.
        #
        # Recorded one by one, the SDK's CPU per value would only move to
        # the collecting thread, which shares the GIL with the requests:
        # _otel_batch.Batch adds each batch to the SDK's aggregation at once
        # where that is checked to be exact, and records each value
        # elsewhere.
        for source, tap, batch in self._feeds:
            batch.record(source.take(tap))
        dropped = sum(tap.dropped for _, tap, _ in self._feeds)
        if dropped > self._dropped_reported:
            logger.warning(
                'Pool %r: %d connection time measurements were dropped: the '
                'meter provider did not collect them in time (at most %d '
                'wait per instrument).', self.pool_name,
                dropped - self._dropped_reported, self._feeds[0][1].capacity)
            self._dropped_reported = dropped

    def close(self) -> None:
        """Stop reporting this pool and free its name on the meter
        provider (the instruments stay: the API cannot remove them)."""
        self._closed = True
        for source, tap, _ in self._feeds:
            source.untap(tap)
        self._instruments.remove(self)


def _limit(pool: PoolInstruments, db: Any, stats: Dict[str, Any]) -> _Points:
    # max_connections 0: unlimited, no point.
    if not stats['max_connections']:
        return []
    return [(stats['max_connections'], pool.attributes)]


# What each asynchronous instrument observes of a pool: (value,
# attributes) pairs from the pool, its database and a pool_stats() snapshot.
_OBSERVED: Tuple[Tuple[str, Tuple[str, str, str], Callable[
        [PoolInstruments, Any, Dict[str, Any]], _Points]], ...] = (
    ('up_down_counter', COUNT, lambda pool, db, stats: [
        (stats['idle'], pool.idle), (stats['in_use'], pool.used)]),
    ('up_down_counter', IDLE_MAX, _limit),
    ('up_down_counter', IDLE_MIN, lambda pool, db, stats: [
        (db._pool_options.min_connections, pool.attributes)]),
    ('up_down_counter', MAX, _limit),
    ('up_down_counter', PENDING_REQUESTS, lambda pool, db, stats: [
        (stats['waiting'], pool.attributes)]),
    ('counter', TIMEOUTS, lambda pool, db, stats: [
        (stats['timeouts'], pool.attributes)]),
)


class _MeterInstruments:
    """The nine instruments on one meter provider, for every pool reported
    through it. Created once: an SDK hands back the first instrument of a
    name when asked again, without the second one's callbacks."""

    def __init__(self, meter: Any) -> None:
        self.pools: Tuple[PoolInstruments, ...] = ()    # replaced whole
        self.create_time, self.wait_time, self.use_time = (
            meter.create_histogram(
                name, unit=unit, description=description,
                explicit_bucket_boundaries_advisory=list(BUCKETS))
            for name, unit, description in (CREATE_TIME, WAIT_TIME,
                                            USE_TIME))
        create = {'up_down_counter': meter.create_observable_up_down_counter,
                  'counter': meter.create_observable_counter}
        self.observables = [
            create[kind](spec[0], callbacks=[self._callback(points)],
                         unit=spec[1], description=spec[2])
            for kind, spec, points in _OBSERVED]

    def _callback(self, points: Callable[..., _Points]
                  ) -> Callable[[Any], List[Any]]:
        observation = _api().Observation

        def callback(options: Any) -> List[Any]:
            observed = []
            for pool in self.pools:
                found = pool._observe()
                if found is not None:
                    observed += [observation(value, attributes)
                                 for value, attributes in points(pool,
                                                                 *found)]
            return observed
        return callback

    def add(self, db: Any, pool_name: str) -> PoolInstruments:
        # Under _registry_lock.
        if any(p.pool_name == pool_name and p.live for p in self.pools):
            raise ValueError(
                'A pool named %r is already instrumented on this meter '
                'provider: give instrument() another pool_name.' % pool_name)
        pool = PoolInstruments(db, pool_name, self)
        self.pools = tuple(p for p in self.pools if p.live) + (pool,)
        return pool

    def remove(self, pool: PoolInstruments) -> None:
        with _registry_lock:
            self.pools = tuple(p for p in self.pools if p is not pool)


def _instruments_for(provider: Any) -> _MeterInstruments:
    # Under _registry_lock.
    try:
        found = _registry.get(provider)
    except TypeError:                # a provider without weak references
        found = _strong_registry.get(id(provider), (None, None))[1]
    if found is None:
        from . import __version__
        found = _MeterInstruments(_api().get_meter(
            'playhouse_pool', __version__, meter_provider=provider))
        try:
            _registry[provider] = found
        except TypeError:
            _strong_registry[id(provider)] = (provider, found)
    return found


def instrument(db: Any, meter_provider: Optional[Any] = None,
               pool_name: Optional[str] = None) -> PoolInstruments:
    """Report the pool of ``db`` through OpenTelemetry, with the instruments
    of the semantic conventions for database client connection pools.

    ``meter_provider``: where to create them (default ``None``: the global
    provider, ``opentelemetry.metrics.get_meter_provider()``, which may be
    set later). ``pool_name``: the ``db.client.connection.pool.name`` of
    every point (default: :func:`default_pool_name`, never a password).

    Raises ``ValueError`` if the name is empty, if another pool already
    reports under it on this meter provider, or if ``db`` is deferred and no
    name is given; ``TypeError`` if ``db`` is not a pooled database or the
    name not a str; ``ImportError`` without ``opentelemetry-api``.
    """
    metrics = _api()
    events_of(db)                   # TypeError for a database without pool
    if pool_name is None:
        pool_name = default_pool_name(db)
    elif not isinstance(pool_name, str):
        raise TypeError('pool_name must be a str, not %s'
                        % type(pool_name).__name__)
    if not pool_name:
        raise ValueError('pool_name must not be empty.')
    provider = (metrics.get_meter_provider() if meter_provider is None
                else meter_provider)
    with _registry_lock:
        return _instruments_for(provider).add(db, pool_name)
