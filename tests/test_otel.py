"""OpenTelemetry: the semantic conventions' connection pool instruments, their
points matching pool_stats() and the pool's events, read back through the
SDK's in-memory reader."""
import os
import subprocess
import sys
from typing import Any, Dict, List, Tuple

import pytest

pytest.importorskip('opentelemetry.sdk.metrics')
db_metrics = pytest.importorskip(
    'opentelemetry.semconv._incubating.metrics.db_metrics')

from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import (  # noqa: E402
    HistogramDataPoint, InMemoryMetricReader)
from opentelemetry.semconv._incubating.attributes import (  # noqa: E402
    db_attributes)

import playhouse_pool as pp  # noqa: E402
from playhouse_pool.otel import (default_pool_name,  # noqa: E402
                                 instrument)

from conftest import Psycopg2Backend, Psycopg3Backend  # noqa: E402

PASSWORD = 's3cr3t-pw'
POOL_NAME = db_attributes.DB_CLIENT_CONNECTION_POOL_NAME
STATE = db_attributes.DB_CLIENT_CONNECTION_STATE
IDLE = db_attributes.DbClientConnectionStateValues.IDLE.value
USED = db_attributes.DbClientConnectionStateValues.USED.value

postgres_only = pytest.mark.parametrize(
    'server_backend', [Psycopg2Backend, Psycopg3Backend], indirect=True)


class _ConventionMeter:
    """Stands in for a Meter under the semantic conventions package's own
    create_* helpers: records the kind, name and unit each one asks for."""

    def _record(kind: str) -> Any:            # type: ignore[misc]
        def create(self: Any, name: str, unit: str = '',
                   description: str = '', **_: Any) -> Tuple[str, str, str]:
            return kind, name, unit
        return create

    create_counter = _record('counter')
    create_up_down_counter = _record('updowncounter')
    create_histogram = _record('histogram')


def convention_instruments() -> Dict[str, Tuple[str, str]]:
    """{name: (instrument kind, unit)} of the connection pool instruments,
    as the installed semantic conventions package defines them."""
    meter = _ConventionMeter()
    creators = [db_metrics.create_db_client_connection_count,
                db_metrics.create_db_client_connection_idle_max,
                db_metrics.create_db_client_connection_idle_min,
                db_metrics.create_db_client_connection_max,
                db_metrics.create_db_client_connection_pending_requests,
                db_metrics.create_db_client_connection_timeouts,
                db_metrics.create_db_client_connection_create_time,
                db_metrics.create_db_client_connection_wait_time,
                db_metrics.create_db_client_connection_use_time]
    specs = [create(meter) for create in creators]
    return {name: (kind, unit) for kind, name, unit in specs}


def kind_of(metric: Any) -> str:
    """The instrument kind an exported metric's data says it came from."""
    data = metric.data
    if type(data).__name__ == 'Histogram':
        return 'histogram'
    return 'counter' if data.is_monotonic else 'updowncounter'


def reader_and_provider() -> Tuple[InMemoryMetricReader, MeterProvider]:
    reader = InMemoryMetricReader()
    return reader, MeterProvider(metric_readers=[reader])


def collect(reader: InMemoryMetricReader) -> Dict[str, Any]:
    """{metric name: metric} of the pool's instruments, one collection."""
    data = reader.get_metrics_data()
    found: Dict[str, Any] = {}
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            if scope.scope.name == 'playhouse_pool':
                found.update((m.name, m) for m in scope.metrics)
    return found


def by_pool(metric: Any) -> Dict[str, List[Any]]:
    points: Dict[str, List[Any]] = {}
    for point in metric.data.data_points:
        points.setdefault(point.attributes[POOL_NAME], []).append(point)
    return points


def pools_in(metrics: Dict[str, Any], name: str) -> List[str]:
    """The pool names ``name`` has points for (none if it is not there)."""
    return sorted(by_pool(metrics[name])) if name in metrics else []


def value(metrics: Dict[str, Any], name: str, pool: str) -> Any:
    """The one point of ``name`` for ``pool``: its value, or for a
    histogram its count."""
    [point] = by_pool(metrics[name])[pool]
    return point.count if isinstance(point, HistogramDataPoint) \
        else point.value


def count_by_state(metrics: Dict[str, Any], pool: str) -> Dict[str, int]:
    points = by_pool(metrics[db_metrics.DB_CLIENT_CONNECTION_COUNT])[pool]
    return {p.attributes[STATE]: p.value for p in points}


def test_the_instruments_are_the_conventions_names_kinds_and_units(
        tmp_path: Any) -> None:
    db = pp.PooledSqliteDatabase(str(tmp_path / 'a.db'))
    reader, provider = reader_and_provider()
    instrument(db, meter_provider=provider)
    with db.connection_context():
        db.execute_sql('SELECT 1')

    metrics = collect(reader)

    assert {name: (kind_of(m), m.unit) for name, m in metrics.items()} == \
        convention_instruments()
    for metric in metrics.values():
        for point in metric.data.data_points:
            assert POOL_NAME in point.attributes


@postgres_only
def test_a_workload_is_counted_as_pool_stats_and_its_events_say(
        server_backend: Any) -> None:
    # Both connections opened ahead: a connect may take longer than this
    # timeout.
    db = server_backend.make_db(max_connections=2, min_connections=2,
                                timeout=0.05, password=PASSWORD)
    reader, provider = reader_and_provider()
    pool = instrument(db, meter_provider=provider).pool_name
    db.warm_up()
    wait_time = db_metrics.DB_CLIENT_CONNECTION_WAIT_TIME
    use_time = db_metrics.DB_CLIENT_CONNECTION_USE_TIME
    create_time = db_metrics.DB_CLIENT_CONNECTION_CREATE_TIME

    for _ in range(5):                              # 5 checkouts
        with db.connection_context():
            db.execute_sql('SELECT 1')
    with db.execution_context(with_transaction=False):       # one idle one
        with db.execution_context(with_transaction=False):   # the other
            with pytest.raises(pp.MaxConnectionsExceeded):   # times out
                with db.execution_context():
                    pass
            held = collect(reader)
            held_stats = db.pool_stats()
    metrics = collect(reader)
    stats = db.pool_stats()

    # While both connections were held.
    assert count_by_state(held, pool) == {USED: 2, IDLE: 0}
    assert value(held, wait_time, pool) == held_stats['checkouts'] == 7
    assert value(held, use_time, pool) == 5
    assert value(held, db_metrics.DB_CLIENT_CONNECTION_PENDING_REQUESTS,
                 pool) == 0
    # After: every instrument, as pool_stats() and the workload say.
    assert set(metrics) == set(convention_instruments())
    by_state = count_by_state(metrics, pool)
    assert by_state == {USED: stats['in_use'], IDLE: stats['idle']}
    assert by_state[USED] + by_state[IDLE] == stats['open'] == 2
    assert value(metrics, db_metrics.DB_CLIENT_CONNECTION_MAX, pool) == \
        stats['max_connections'] == 2
    assert value(metrics, db_metrics.DB_CLIENT_CONNECTION_IDLE_MAX,
                 pool) == 2
    assert value(metrics, db_metrics.DB_CLIENT_CONNECTION_IDLE_MIN,
                 pool) == 2
    assert value(metrics, db_metrics.DB_CLIENT_CONNECTION_TIMEOUTS,
                 pool) == stats['timeouts'] == 1
    assert value(metrics, wait_time, pool) == stats['checkouts'] == 7
    assert value(metrics, use_time, pool) == 7          # every check-in
    assert value(metrics, create_time, pool) == stats['created'] == 2
    [use] = by_pool(metrics[use_time])[pool]
    [create] = by_pool(metrics[create_time])[pool]
    assert use.sum == pytest.approx(stats['use_seconds'], rel=1e-9)
    assert create.sum == pytest.approx(stats['connect_seconds'], rel=1e-9)
    assert sum(use.bucket_counts) == use.count
    # No attribute of any point holds the password.
    for metric in metrics.values():
        for point in metric.data.data_points:
            for attribute in point.attributes.values():
                assert PASSWORD not in str(attribute)
    assert pool == '%s:%s/%s' % (db.connect_params['host'],
                                 db.connect_params['port'], db.database)


@postgres_only
def test_each_reader_gets_every_measurement_in_its_next_collection(
        server_backend: Any) -> None:
    db = server_backend.make_db()
    first, second = InMemoryMetricReader(), InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[first, second])
    pool = instrument(db, meter_provider=provider).pool_name
    wait_time = db_metrics.DB_CLIENT_CONNECTION_WAIT_TIME

    def checkouts(count: int) -> None:
        for _ in range(count):
            with db.connection_context():
                db.execute_sql('SELECT 1')

    checkouts(3)
    assert value(collect(first), wait_time, pool) == 3
    checkouts(4)
    assert value(collect(second), wait_time, pool) == 7
    assert value(collect(first), wait_time, pool) == 7
    assert value(collect(second), wait_time, pool) == 7


@postgres_only
def test_two_databases_are_kept_apart_by_pool_name_in_both_collectors(
        server_backend: Any) -> None:
    from prometheus_client import CollectorRegistry

    from playhouse_pool.prometheus import register
    from test_prometheus import WAIT, scrape_histograms

    first = server_backend.make_db(max_connections=2)
    second = server_backend.make_db(database='postgres', max_connections=3)
    reader, provider = reader_and_provider()
    names = [instrument(db, meter_provider=provider).pool_name
             for db in (first, second)]
    registry = CollectorRegistry()
    register(first, second, registry=registry)

    for db, count in ((first, 3), (second, 5)):
        for _ in range(count):
            with db.connection_context():
                db.execute_sql('SELECT 1')

    metrics = collect(reader)
    wait_time = db_metrics.DB_CLIENT_CONNECTION_WAIT_TIME
    assert {pool: value(metrics, wait_time, pool) for pool in names} == \
        dict(zip(names, [3, 5]))
    assert {pool: value(metrics, db_metrics.DB_CLIENT_CONNECTION_MAX, pool)
            for pool in names} == dict(zip(names, [2, 3]))
    assert {label: histograms[WAIT]['count'] for label, histograms
            in scrape_histograms(registry).items()} == {'test': 3,
                                                        'postgres': 5}


def test_default_pool_name_is_host_port_and_database_without_password(
) -> None:
    db = pp.PooledPostgresqlDatabase('app', host='db.example', port=6432,
                                     user='app', password=PASSWORD)
    assert default_pool_name(db) == 'db.example:6432/app'
    url = pp.PooledPostgresqlDatabase(
        'postgresql://app:%s@db.example/app' % PASSWORD)
    assert PASSWORD not in default_pool_name(url)
    assert default_pool_name(pp.PooledSqliteDatabase('/srv/app.db')) == \
        '/srv/app.db'


def test_a_given_pool_name_is_on_every_point(tmp_path: Any) -> None:
    db = pp.PooledSqliteDatabase(str(tmp_path / 'a.db'))
    reader, provider = reader_and_provider()
    instrument(db, meter_provider=provider, pool_name='primary')
    with db.connection_context():
        pass

    for metric in collect(reader).values():
        assert set(by_pool(metric)) == {'primary'}


def test_a_pool_name_taken_on_a_provider_is_refused_until_freed(
        tmp_path: Any) -> None:
    first = pp.PooledSqliteDatabase(str(tmp_path / 'a.db'))
    second = pp.PooledSqliteDatabase(str(tmp_path / 'b.db'))
    _, provider = reader_and_provider()
    instruments = instrument(first, meter_provider=provider,
                             pool_name='app')

    with pytest.raises(ValueError, match="'app' is already instrumented"):
        instrument(second, meter_provider=provider, pool_name='app')
    with pytest.raises(ValueError, match='already instrumented'):
        instrument(first, meter_provider=provider, pool_name='app')
    instrument(second, meter_provider=reader_and_provider()[1],
               pool_name='app')                   # another provider: fine
    instruments.close()
    instrument(second, meter_provider=provider, pool_name='app')


def test_a_closed_instrumentation_reports_nothing_more(
        tmp_path: Any) -> None:
    closed = pp.PooledSqliteDatabase(str(tmp_path / 'a.db'))
    kept = pp.PooledSqliteDatabase(str(tmp_path / 'b.db'))
    reader, provider = reader_and_provider()
    instrument(closed, meter_provider=provider, pool_name='closed').close()
    instrument(kept, meter_provider=provider, pool_name='kept')
    for db in (closed, kept):
        with db.connection_context():
            pass

    metrics = collect(reader)
    assert {name: pools_in(metrics, name) for name in metrics} == {
        name: ['kept'] for name in convention_instruments()}


@pytest.mark.parametrize('bad, error', [('', ValueError), (3, TypeError)])
def test_a_bad_pool_name_is_refused(tmp_path: Any, bad: Any,
                                    error: type) -> None:
    db = pp.PooledSqliteDatabase(str(tmp_path / 'a.db'))
    with pytest.raises(error, match='pool_name'):
        instrument(db, meter_provider=reader_and_provider()[1],
                   pool_name=bad)


def test_a_deferred_database_needs_a_pool_name() -> None:
    db = pp.PooledPostgresqlDatabase(None)
    with pytest.raises(ValueError, match='deferred'):
        instrument(db, meter_provider=reader_and_provider()[1])
    instrument(db, meter_provider=reader_and_provider()[1], pool_name='app')


def test_an_unlimited_pool_has_no_max_points(tmp_path: Any) -> None:
    db = pp.PooledSqliteDatabase(str(tmp_path / 'a.db'), max_connections=0,
                                 min_connections=2)
    reader, provider = reader_and_provider()
    pool = instrument(db, meter_provider=provider).pool_name

    metrics = collect(reader)

    assert pools_in(metrics, db_metrics.DB_CLIENT_CONNECTION_MAX) == []
    assert pools_in(metrics, db_metrics.DB_CLIENT_CONNECTION_IDLE_MAX) == []
    assert pools_in(metrics, db_metrics.DB_CLIENT_CONNECTION_COUNT) == [pool]
    assert value(metrics, db_metrics.DB_CLIENT_CONNECTION_IDLE_MIN,
                 pool) == 2


def test_the_global_meter_provider_is_the_default_even_if_set_later(
        tmp_path: Any) -> None:
    code = '''
import playhouse_pool as pp
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from playhouse_pool.otel import instrument

db = pp.PooledSqliteDatabase(%r)
instrument(db)                     # the API's proxy: no SDK yet
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
for _ in range(3):
    db.connect()
    db.close()
for resource in reader.get_metrics_data().resource_metrics:
    for scope in resource.scope_metrics:
        for metric in scope.metrics:
            if metric.name == 'db.client.connection.wait_time':
                print(metric.data.data_points[0].count)
''' % str(tmp_path / 'a.db')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, check=True).stdout
    assert out.split() == ['3']


def test_package_imports_without_opentelemetry_and_says_what_to_install(
) -> None:
    code = ('import sys; sys.modules["opentelemetry"] = None\n'
            'import playhouse_pool, playhouse_pool.otel as o\n'
            'try:\n'
            '    o.instrument(playhouse_pool.PooledSqliteDatabase("x.db"))\n'
            'except ImportError as exc:\n'
            '    print(exc)\n')
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, check=True, cwd=root).stdout
    assert "pip install 'playhouse-pool[opentelemetry]'" in out
