"""Handing a batch of the pool's times to an OpenTelemetry histogram.

``playhouse_pool.otel`` records the wait, use and connect times at each
collection, a batch per histogram (see ``PoolInstruments._record_times``).
The API has one way in, ``Histogram.record(value)``, and the SDK spends
6-10 us of CPU on each call (a Measurement, attribute hashing, the exemplar
filter, two locks). At the benchmark's 10,000 checkouts a second, two times
each, that is a fifth of the process's time: far beyond what a pool's
metrics may cost.

So when the histogram is the SDK's and every view of it aggregates into
explicit buckets (the default), :class:`Batch` adds the batch to the SDK's
aggregation in one step: the values sorted once, a bucket's count one
bisection, the sum, min and max once, under the aggregation's own lock, the
lock the SDK's ``record()`` takes. That reaches into the SDK's internals, so
it is used only after :func:`_merge_matches_record` has shown, on this
process's SDK, on a private meter provider with a cumulative and a delta
reader, that it gives exactly the points ``record()`` gives. Any other SDK
version, view or provider gets ``record()`` for each value: slower, never
wrong. (What the merge does not do: offer values to an exemplar reservoir.
No request's span is current at collection, so with the SDK's default
filter recording each value there would sample none either, unless the
collection itself runs in a sampled span.)
"""
import contextlib
import logging
import math
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

from .events import count_into

logger = logging.getLogger('playhouse_pool.otel')

__all__ = ['Batch', 'merge']

# Values recorded one by one between two yields of the GIL (about a
# millisecond of the SDK's work).
_RECORD_BATCH = 64

# Whether the merge gives what record() gives on this SDK (None: not
# checked yet).
_merge_ok: Optional[bool] = None
_checking = threading.Lock()


def _sdk() -> Optional[type]:
    """The SDK's explicit-bucket aggregation class, which the merge feeds,
    or None without the SDK (or with one that has no such class)."""
    try:
        from opentelemetry.sdk.metrics._internal.aggregation import (
            _ExplicitBucketHistogramAggregation)
    except ImportError:
        return None
    return _ExplicitBucketHistogramAggregation


def _real(histogram: Any) -> Any:
    # A histogram of the API's global proxy provider forwards to the SDK's
    # once a provider is set; until then it has none.
    return getattr(histogram, '_real_instrument', histogram)


def _matches(histogram: Any) -> Optional[List[Any]]:
    """Every view's aggregation state of an SDK histogram, for every
    reader; None if this is not an SDK histogram the merge can feed."""
    consumer = getattr(histogram, '_measurement_consumer', None)
    storages = getattr(consumer, '_reader_storages', None)
    if not isinstance(storages, dict):
        return None
    found = []
    for storage in tuple(storages.values()):
        found.extend(storage._get_or_init_view_instrument_match(histogram))
    return found


def _aggregation_of(match: Any, attributes: Dict[str, str]) -> Any:
    """The match's aggregation for these attributes (filtered by its view
    already), or None (the attribute set went to the SDK's overflow point,
    past its cardinality limit). Under the match's lock."""
    for aggregation in match._attributes_aggregation.values():
        if aggregation._attributes == attributes:
            return aggregation
    return None


def merge(histogram: Any, values: Sequence[float],
          attributes: Dict[str, str], explicit: type) -> Optional[int]:
    """Add ``values`` to SDK ``histogram`` as one ``record()`` each would.
    Returns how many went straight into the SDK's aggregations (the others
    through ``record()``); None, with nothing added, if some view does not
    aggregate into explicit buckets or this is not an SDK histogram."""
    matches = _matches(histogram)
    if matches is None:
        return None
    if any(type(match._aggregation) is not explicit for match in matches):
        return None
    enabled = getattr(histogram, '_is_enabled', None)
    if not values or (enabled is not None and not enabled()):
        return 0                     # record() would drop them too
    # The first value the public way: the SDK makes each view's aggregation
    # for these attributes, however its version keys them.
    histogram.record(values[0], attributes)
    rest = values[1:]
    if not rest:
        return 0
    kept = []
    for match in matches:
        keys = match._view._attribute_keys
        kept.append(dict(attributes) if keys is None else {
            k: v for k, v in attributes.items() if k in keys})
    with contextlib.ExitStack() as locks:
        # Every match's lock, as the SDK's collect() takes it (the SDK runs
        # this callback under its consumer's lock already, so no collection
        # of this provider runs meanwhile; this keeps it so should that
        # change).
        for match in matches:
            locks.enter_context(match._lock)
        found = [_aggregation_of(match, attrs)
                 for match, attrs in zip(matches, kept)]
        if all(aggregation is not None for aggregation in found):
            ordered = sorted(rest)
            total = 0.0
            for value in rest:       # in order, as record() would add them
                total += value
            for aggregation in found:
                _add(aggregation, ordered, total)
            return len(rest)
    # Not found (the SDK put these attributes on its overflow point, past
    # its cardinality limit): the rest the public way, with no lock of the
    # SDK's held.
    for value in rest:
        histogram.record(value, attributes)
    return 0


def _add(aggregation: Any, ordered: List[float], total: float) -> None:
    # The SDK counts value v in bucket bisect_left(boundaries, v): bounds
    # are inclusive upper limits, as for events.TimeHistogram.
    with aggregation._lock:
        if aggregation._value is None:
            aggregation._value = aggregation._get_empty_bucket_counts()
        count_into(aggregation._value, aggregation._boundaries, ordered)
        aggregation._sum += total
        if aggregation._record_min_max:
            aggregation._min = min(aggregation._min, ordered[0])
            aggregation._max = max(aggregation._max, ordered[-1])


def _points(reader: Any) -> List[Any]:
    data = reader.get_metrics_data()
    if data is None:                 # a delta reader with nothing new
        return []
    return sorted(
        ((metric.name, point.count, tuple(point.bucket_counts), point.min,
          point.max, point.sum)
         for resource in data.resource_metrics
         for scope in resource.scope_metrics
         for metric in scope.metrics
         for point in metric.data.data_points),
        key=lambda p: p[0])


def _same(these: List[Any], those: List[Any]) -> bool:
    # Sums may differ in the last bits: the merge adds a batch's values up
    # before adding them to the running sum.
    return len(these) == len(those) and all(
        a[:-1] == b[:-1] and math.isclose(a[-1], b[-1], rel_tol=1e-9)
        for a, b in zip(these, those))


def _merge_matches_record(explicit: type) -> bool:
    """Whether :func:`merge` gives exactly what ``record()`` gives on this
    SDK: both ways, on a private provider, through a cumulative and a
    delta reader, over two collections."""
    from opentelemetry.sdk.metrics import Histogram, MeterProvider
    from opentelemetry.sdk.metrics.export import (AggregationTemporality,
                                                  InMemoryMetricReader)
    from opentelemetry.sdk.resources import Resource
    readers = [InMemoryMetricReader(), InMemoryMetricReader(
        preferred_temporality={Histogram: AggregationTemporality.DELTA})]
    # An empty resource: the default one runs the user's resource
    # detectors, which may be slow.
    provider = MeterProvider(metric_readers=readers,
                             resource=Resource.get_empty())
    try:
        meter = provider.get_meter('playhouse_pool.check')
        bounds = [1e-4, 1e-3, 1e-2]
        recorded, merged = (
            meter.create_histogram(name, unit='s',
                                   explicit_bucket_boundaries_advisory=bounds)
            for name in ('a', 'b'))
        attributes = {'pool': 'check'}
        for batch in ([5e-5, 1e-4, 2e-3, 1e-3, 0.5], [], [3e-3, 1e-2]):
            for value in batch:
                recorded.record(value, attributes)
            if merge(merged, batch, attributes, explicit) is None:
                return False
            for reader in readers:
                points = _points(reader)
                if not _same([p[1:] for p in points if p[0] == 'a'],
                             [p[1:] for p in points if p[0] == 'b']):
                    return False
        return True
    finally:
        provider.shutdown()


def _merge_works() -> Optional[type]:
    """The SDK aggregation class for :func:`merge`, if the merge is checked
    to work here (once per process)."""
    global _merge_ok
    with _checking:
        explicit = _sdk()
        if explicit is None:
            return None
        if _merge_ok is None:
            try:
                _merge_ok = _merge_matches_record(explicit)
            except Exception:        # an SDK whose internals differ
                logger.debug('OpenTelemetry SDK histograms: recording each '
                             'value (the batch merge does not fit this SDK)',
                             exc_info=True)
                _merge_ok = False
        return explicit if _merge_ok else None


class Batch:
    """Records batches of values into one histogram with fixed
    attributes: merged into the SDK's aggregation where that is checked to
    be exact, else one ``record()`` each."""

    def __init__(self, histogram: Any, attributes: Dict[str, str]) -> None:
        self.histogram = histogram
        self.attributes = attributes
        self._explicit: Optional[type] = None
        self._looked = False
        self.merged = 0              # values merged straight in (for tests)

    def record(self, values: Sequence[float]) -> None:
        histogram = _real(self.histogram)
        if histogram is None:
            return                   # the global provider is not set yet
        if not self._looked and hasattr(histogram, '_measurement_consumer'):
            self._explicit = _merge_works()
            self._looked = True
        merged = None if self._explicit is None else merge(
            histogram, values, self.attributes, self._explicit)
        if merged is None:
            self._each(histogram, values)
        else:
            self.merged += merged

    def _each(self, histogram: Any, values: Sequence[float]) -> None:
        record, attributes = histogram.record, self.attributes
        for start in range(0, len(values), _RECORD_BATCH):
            for value in values[start:start + _RECORD_BATCH]:
                record(value, attributes)
            # Let the request threads have the GIL between batches (a
            # collection may record thousands of values): they would wait
            # up to the interpreter's switch interval (5 ms) otherwise.
            time.sleep(0)

