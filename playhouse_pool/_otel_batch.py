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
wrong. (What the merge does not do: offer values to an exemplar reservoir;
at collection no request's span is current, so the SDK's default filter
would sample none either.)
"""
import bisect
import logging
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

logger = logging.getLogger('playhouse_pool.otel')

__all__ = ['Batch', 'merge']

# Values recorded one by one between two yields of the GIL (about a
# millisecond of the SDK's work).
_RECORD_BATCH = 64

_checked: Dict[str, bool] = {}
_checking = threading.Lock()


def _sdk() -> Optional[Any]:
    """The SDK's internal names the merge uses, or None if this SDK lacks
    one of them."""
    try:
        from opentelemetry.sdk.metrics._internal import (
            _view_instrument_match as matches)
        from opentelemetry.sdk.metrics._internal.aggregation import (
            _ExplicitBucketHistogramAggregation)
    except ImportError:
        return None
    hash_attributes = getattr(matches, '_hash_attributes', None)
    match_class = getattr(matches, '_ViewInstrumentMatch', None)
    if hash_attributes is None or match_class is None or not hasattr(
            match_class, '_get_or_create_aggregation'):
        return None
    return _Internals(hash_attributes, _ExplicitBucketHistogramAggregation)


class _Internals:
    def __init__(self, hash_attributes: Callable[[Any], Any],
                 explicit: type) -> None:
        self.hash_attributes = hash_attributes
        self.explicit = explicit


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


def merge(histogram: Any, values: Sequence[float],
          attributes: Dict[str, str], internals: Any) -> bool:
    """Add ``values`` to SDK ``histogram`` as ``record()`` of each would;
    False (nothing added) if some view does not aggregate into explicit
    buckets or this is not an SDK histogram."""
    matches = _matches(histogram)
    if matches is None:
        return False
    explicit = internals.explicit
    if any(type(match._aggregation) is not explicit for match in matches):
        return False
    if not histogram._is_enabled():
        return True                  # record() would drop them too
    if not values:
        return True
    ordered = sorted(values)
    total = 0.0
    for value in values:             # in order, as record() would add them
        total += value
    for match in matches:
        keys = match._view._attribute_keys
        kept = dict(attributes) if keys is None else {
            k: v for k, v in attributes.items() if k in keys}
        key = internals.hash_attributes(kept)
        # The match's lock first, as the SDK's record() and collect() take
        # them: a delta collection cannot drop the aggregation meanwhile.
        with match._lock:
            aggregation = match._get_or_create_aggregation(key, kept)
            _add(aggregation, ordered, total)
    return True


def _add(aggregation: Any, ordered: List[float], total: float) -> None:
    # The SDK counts value v in bucket bisect_left(boundaries, v): bounds
    # are inclusive upper limits, as for events.TimeHistogram.
    with aggregation._lock:
        if aggregation._value is None:
            aggregation._value = aggregation._get_empty_bucket_counts()
        counts, below = aggregation._value, 0
        for index, bound in enumerate(aggregation._boundaries):
            upto = bisect.bisect_right(ordered, bound)
            counts[index] += upto - below
            below = upto
        counts[-1] += len(ordered) - below
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
          point.max, round(point.sum, 9))
         for resource in data.resource_metrics
         for scope in resource.scope_metrics
         for metric in scope.metrics
         for point in metric.data.data_points),
        key=lambda p: p[0])


def _merge_matches_record(internals: Any) -> bool:
    """Whether :func:`merge` gives exactly what ``record()`` gives on this
    SDK: both ways, on a private provider, through a cumulative and a
    delta reader, over two collections."""
    from opentelemetry.sdk.metrics import Histogram, MeterProvider
    from opentelemetry.sdk.metrics.export import (AggregationTemporality,
                                                  InMemoryMetricReader)
    readers = [InMemoryMetricReader(), InMemoryMetricReader(
        preferred_temporality={Histogram: AggregationTemporality.DELTA})]
    provider = MeterProvider(metric_readers=readers)
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
            if not merge(merged, batch, attributes, internals):
                return False
            for reader in readers:
                points = _points(reader)
                if [p[1:] for p in points if p[0] == 'a'] != [
                        p[1:] for p in points if p[0] == 'b']:
                    return False
        return True
    finally:
        provider.shutdown()


def _merge_works() -> Optional[Any]:
    """The SDK internals for :func:`merge`, if it is checked to work here
    (once per process)."""
    with _checking:
        internals = _sdk()
        if internals is None:
            return None
        if 'merge' not in _checked:
            try:
                _checked['merge'] = _merge_matches_record(internals)
            except Exception:        # an SDK whose internals differ
                logger.debug('OpenTelemetry SDK histograms: recording each '
                             'value (the batch merge does not fit this SDK)',
                             exc_info=True)
                _checked['merge'] = False
        return internals if _checked['merge'] else None


class Batch:
    """Records batches of values into one histogram with fixed
    attributes: merged into the SDK's aggregation where that is checked to
    be exact, else one ``record()`` each."""

    def __init__(self, histogram: Any, attributes: Dict[str, str]) -> None:
        self.histogram = histogram
        self.attributes = attributes
        self._internals: Optional[Any] = None
        self._looked = False
        self.merged = 0              # values merged (the tests read it)

    def record(self, values: Sequence[float]) -> None:
        histogram = _real(self.histogram)
        if histogram is None:
            return                   # the global provider is not set yet
        if not self._looked and hasattr(histogram, '_measurement_consumer'):
            self._internals = _merge_works()
            self._looked = True
        if self._internals is not None and merge(
                histogram, values, self.attributes, self._internals):
            self.merged += len(values)
            return
        self._each(histogram, values)

    def _each(self, histogram: Any, values: Sequence[float]) -> None:
        record, attributes = histogram.record, self.attributes
        for start in range(0, len(values), _RECORD_BATCH):
            for value in values[start:start + _RECORD_BATCH]:
                record(value, attributes)
            # Let the request threads have the GIL between batches (a
            # collection may record thousands of values): they would wait
            # up to the interpreter's switch interval (5 ms) otherwise.
            time.sleep(0)

