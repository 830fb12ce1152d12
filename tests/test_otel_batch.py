"""The batch of times handed to an OpenTelemetry SDK histogram at collection
(playhouse_pool._otel_batch): merged into the SDK's aggregation, it gives
exactly the points one record() per value gives; where the merge does not
fit (another aggregation, an SDK whose internals differ) each value is
recorded. Pure bookkeeping against the real SDK: no database."""
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest

pytest.importorskip('opentelemetry.sdk.metrics')

from opentelemetry.sdk.metrics import Histogram, MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import (  # noqa: E402
    AggregationTemporality, InMemoryMetricReader)
from opentelemetry.sdk.metrics.view import (  # noqa: E402
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation, View)

from playhouse_pool import _otel_batch  # noqa: E402
from playhouse_pool._otel_batch import Batch  # noqa: E402

ATTRIBUTES = {'db.client.connection.pool.name': 'p', 'other': 'x'}
BATCHES: List[List[float]] = [
    [2e-5, 1e-4, 1e-4, 3e-3, 0.25, 7.5, 1e-3],   # on bounds and between
    [],                                          # a collection with none
    [5e-4, 60.0, 0.0],                           # past the last bound, zero
]
DELTA = {Histogram: AggregationTemporality.DELTA}


@pytest.fixture(autouse=True)
def fresh_check(monkeypatch: Any) -> None:
    # Each test decides afresh whether the merge fits this SDK.
    monkeypatch.setattr(_otel_batch, '_merge_ok', None)


def provider(views: Sequence[View] = (), delta: bool = False
             ) -> Tuple[InMemoryMetricReader, MeterProvider]:
    reader = InMemoryMetricReader(preferred_temporality=DELTA if delta
                                  else None)
    return reader, MeterProvider(metric_readers=[reader], views=list(views))


def points(reader: InMemoryMetricReader) -> Dict[str, List[Tuple[Any, ...]]]:
    """{histogram name: its points as comparable tuples}, one collection."""
    found: Dict[str, List[Tuple[Any, ...]]] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found[metric.name] = sorted(
                    (tuple(sorted(p.attributes.items())), p.count,
                     tuple(getattr(p, 'bucket_counts', ()) or ()),
                     p.min, p.max, pytest.approx(p.sum, rel=1e-12))
                    for p in metric.data.data_points)
    return found


def recorded_and_merged(views: Sequence[View] = (), delta: bool = False,
                        bounds: Optional[List[float]] = None
                        ) -> Tuple[List[Tuple[Any, Any]], Batch]:
    """The same batches into two histograms of one provider: one record()
    each into ``recorded``, a Batch into ``merged``; per collection, the
    points of each."""
    reader, meter_provider = provider(views, delta)
    meter = meter_provider.get_meter('test')
    advice = {} if bounds is None else {
        'explicit_bucket_boundaries_advisory': bounds}
    recorded = meter.create_histogram('recorded', unit='s', **advice)
    merged = meter.create_histogram('merged', unit='s', **advice)
    batch = Batch(merged, ATTRIBUTES)
    seen = []
    for values in BATCHES:
        for value in values:
            recorded.record(value, ATTRIBUTES)
        batch.record(values)
        collected = points(reader)
        seen.append((collected.get('recorded'), collected.get('merged')))
    meter_provider.shutdown()
    return seen, batch


@pytest.mark.parametrize('delta', [False, True], ids=['cumulative', 'delta'])
@pytest.mark.parametrize('views, bounds', [
    ((), [1e-4, 1e-3, 0.25, 10.0]),
    ((), None),                       # the SDK's default buckets
    ([View(instrument_type=Histogram, attribute_keys={
        'db.client.connection.pool.name'})], [1e-4, 1e-3]),
    ([View(instrument_type=Histogram,
           aggregation=ExplicitBucketHistogramAggregation(
               boundaries=[0.0, 5e-4, 8.0], record_min_max=False))], None),
], ids=['advised-buckets', 'default-buckets', 'attribute-filter',
        'view-buckets-no-min-max'])
def test_a_merged_batch_gives_the_points_one_record_per_value_gives(
        views: Sequence[View], bounds: Optional[List[float]],
        delta: bool) -> None:
    seen, batch = recorded_and_merged(views, delta, bounds)

    for recorded, merged in seen:
        assert merged == recorded
    assert seen[0][0]                                # there were points
    # Each batch's first value goes through record(), the rest are merged.
    assert batch.merged == sum(len(values) - 1 for values in BATCHES
                               if values)


def test_an_exponential_view_gets_each_value_recorded() -> None:
    views = [View(instrument_type=Histogram,
                  aggregation=ExponentialBucketHistogramAggregation())]

    seen, batch = recorded_and_merged(views)

    assert batch.merged == 0
    for recorded, merged in seen:
        assert merged is not None and merged == recorded


def test_a_merge_that_does_not_match_record_on_this_sdk_is_not_used(
        monkeypatch: Any) -> None:
    # An SDK whose aggregation is not what the merge expects: here one that
    # counts each merged value twice.
    real_add = _otel_batch._add

    def double_add(aggregation: Any, ordered: List[float],
                   total: float) -> None:
        real_add(aggregation, ordered + ordered, total * 2)
    monkeypatch.setattr(_otel_batch, '_add', double_add)

    seen, batch = recorded_and_merged(bounds=[1e-3])

    assert batch.merged == 0
    for recorded, merged in seen:
        assert merged == recorded


def test_an_sdk_without_the_internals_gets_each_value_recorded(
        monkeypatch: Any) -> None:
    monkeypatch.setattr(_otel_batch, '_sdk', lambda: None)

    seen, batch = recorded_and_merged()

    assert batch.merged == 0
    for recorded, merged in seen:
        assert merged == recorded


def test_a_histogram_that_is_not_the_sdks_gets_record_per_value() -> None:
    calls: List[Tuple[float, Dict[str, str]]] = []

    class Other:                      # another API implementation
        def record(self, value: float, attributes: Dict[str, str]) -> None:
            calls.append((value, attributes))

    batch = Batch(Other(), ATTRIBUTES)
    batch.record(BATCHES[0])

    assert calls == [(value, ATTRIBUTES) for value in BATCHES[0]]
    assert batch.merged == 0
