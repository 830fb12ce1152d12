"""The Prometheus collector exposes pool_stats() as it is at scrape time, and
histograms of the pool's wait, use and connect times."""
import math
import os
import subprocess
import sys
import threading
from typing import Any, Dict

import pytest

prometheus_client = pytest.importorskip('prometheus_client')

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import (  # noqa: E402
    text_string_to_metric_families)

import playhouse_pool as pp  # noqa: E402
from playhouse_pool.prometheus import (METRICS, PoolCollector,  # noqa: E402
                                       register)

from conftest import wait_until  # noqa: E402

# The public metric names, per pool_stats() key (what dashboards rely on).
SAMPLES = {
    'max_connections': ('playhouse_pool_max_connections', 'gauge'),
    'open': ('playhouse_pool_connections_open', 'gauge'),
    'in_use': ('playhouse_pool_connections_in_use', 'gauge'),
    'idle': ('playhouse_pool_connections_idle', 'gauge'),
    'waiting': ('playhouse_pool_waiting_threads', 'gauge'),
    'created': ('playhouse_pool_connections_created_total', 'counter'),
    'closed': ('playhouse_pool_connections_closed_total', 'counter'),
    'checkouts': ('playhouse_pool_checkouts_total', 'counter'),
    'timeouts': ('playhouse_pool_timeouts_total', 'counter'),
    'reclaimed': ('playhouse_pool_connections_reclaimed_total', 'counter'),
    'recycled': ('playhouse_pool_connections_recycled_total', 'counter'),
    'recovered': ('playhouse_pool_statements_recovered_total', 'counter'),
    'wait_seconds': ('playhouse_pool_wait_seconds_total', 'counter'),
    'use_seconds': ('playhouse_pool_use_seconds_total', 'counter'),
    'connect_seconds': ('playhouse_pool_connect_seconds_total', 'counter'),
    'connect_errors': ('playhouse_pool_connect_errors_total', 'counter'),
    'io_timeouts': ('playhouse_pool_io_timeouts_total', 'counter'),
}

# The histograms' names (what dashboards rely on).
WAIT, USE, CREATE = ('playhouse_pool_wait_time_seconds',
                     'playhouse_pool_use_time_seconds',
                     'playhouse_pool_create_time_seconds')


def scrape(registry: Any) -> Dict[str, Dict[str, Any]]:
    """{database label: {sample name: (value, family type)}} of the gauges
    and counters, parsed back from the text exposition."""
    text = generate_latest(registry).decode()
    out: Dict[str, Dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        if family.type == 'histogram':
            continue
        for sample in family.samples:
            assert set(sample.labels) == {'database'}
            out.setdefault(sample.labels['database'], {})[sample.name] = (
                sample.value, family.type)
    return out


def scrape_histograms(registry: Any) -> Dict[str, Dict[str, Any]]:
    """{database label: {histogram name: {'buckets': [(le, cumulative
    count)], 'count': n, 'sum': s}}}, parsed back from the exposition."""
    text = generate_latest(registry).decode()
    out: Dict[str, Dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        if family.type != 'histogram':
            continue
        for sample in family.samples:
            label = sample.labels['database']
            found = out.setdefault(label, {}).setdefault(
                family.name, {'buckets': []})
            if sample.name.endswith('_bucket'):
                assert set(sample.labels) == {'database', 'le'}
                found['buckets'].append((float(sample.labels['le']),
                                         sample.value))
            else:
                assert set(sample.labels) == {'database'}
                found[sample.name.rsplit('_', 1)[1]] = sample.value
    return out


def expected(stats: Dict[str, Any]) -> Dict[str, Any]:
    return {name: (float(stats[key]), kind)
            for key, (name, kind) in SAMPLES.items()}


def make_db(tmp_path: Any, name: str = 'app.db', **kwargs: Any) -> Any:
    return pp.PooledSqliteDatabase(str(tmp_path / name), **kwargs)


def test_every_pool_stats_key_has_a_metric(tmp_path: Any) -> None:
    db = make_db(tmp_path)
    assert {m[0] for m in METRICS} == set(db.pool_stats()) == set(SAMPLES)


def test_scrape_shows_exactly_pool_stats_at_that_moment(tmp_path: Any) -> None:
    db = make_db(tmp_path, max_connections=2, timeout=30, max_waiting=1)
    registry = CollectorRegistry()
    registry.register(PoolCollector(db))
    label = str(tmp_path / 'app.db')

    def assert_scrape_matches() -> Dict[str, Any]:
        scraped = scrape(registry)
        stats = db.pool_stats()          # nothing runs between the two
        assert scraped == {label: expected(stats)}
        return stats

    assert_scrape_matches()              # an empty pool: all zero

    # A thread that ends without close(): its connection is reclaimed.
    abandon = threading.Thread(target=db.connect)
    abandon.start()
    abandon.join()
    wait_until(lambda: db.pool_stats()['reclaimed'] == 1, what='reclaim')
    db.connect()
    db.manual_close()                    # closed
    db.connect()                         # held by this thread
    other = db.execution_context(with_transaction=False)
    other.__enter__()                    # a second one: the pool is full

    served = threading.Event()

    def waiter() -> None:
        db.connect()
        db.close()
        served.set()

    waiting = threading.Thread(target=waiter)
    waiting.start()
    wait_until(lambda: db.pool_stats()['waiting'] == 1, what='a waiter')
    stats = assert_scrape_matches()
    assert (stats['in_use'], stats['waiting']) == (2, 1)

    with pytest.raises(pp.MaxConnectionsExceeded):   # max_waiting: refused
        with db.execution_context():
            pass
    other.__exit__(None, None, None)     # handed to the waiter
    waiting.join()
    assert served.is_set()

    stats = assert_scrape_matches()
    # (recycle() runs on workers in the background: tests/test_lifecycle;
    # recovered stays 0: SQLite never runs a statement again.)
    assert all(stats[key] > 0 for key in SAMPLES
               if key not in ('waiting', 'recycled', 'recovered',
                              'connect_errors', 'io_timeouts')), stats
    db.close()
    assert_scrape_matches()


def test_each_database_is_labelled_with_its_own_name(tmp_path: Any) -> None:
    first = make_db(tmp_path, 'first.db', max_connections=3)
    second = make_db(tmp_path, 'second.db', max_connections=5)
    with first.connection_context():
        first.execute_sql('SELECT 1')
    second.connect()
    registry = CollectorRegistry()
    register(first, second, registry=registry)

    scraped = scrape(registry)

    assert scraped == {
        str(tmp_path / 'first.db'): expected(first.pool_stats()),
        str(tmp_path / 'second.db'): expected(second.pool_stats()),
    }
    second.close()


def test_databases_with_the_same_name_are_refused(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match='same name'):
        PoolCollector(make_db(tmp_path), make_db(tmp_path))


@pytest.mark.parametrize('name', [
    'postgresql://app:s3cr3t-pw@db.example:5432/app',
    'dbname=app user=app password=s3cr3t-pw host=db.example',
])
def test_password_in_database_name_is_not_exposed(name: str) -> None:
    db = pp.PooledPostgresqlDatabase(name)          # never connects
    registry = CollectorRegistry()
    register(db, registry=registry)

    text = generate_latest(registry).decode()

    assert 's3cr3t-pw' not in text
    assert '***' in text and 'db.example' in text


def test_collectors_sharing_a_namespace_on_one_registry_are_refused(
        tmp_path: Any) -> None:
    registry = CollectorRegistry(auto_describe=True)
    register(make_db(tmp_path, 'a.db'), registry=registry)
    with pytest.raises(ValueError):
        register(make_db(tmp_path, 'b.db'), registry=registry)
    register(make_db(tmp_path, 'b.db'), registry=registry, namespace='other')
    assert 'other_connections_open' in generate_latest(registry).decode()


def test_package_imports_without_prometheus_client_and_says_what_to_install(
) -> None:
    code = ('import sys; sys.modules["prometheus_client"] = None\n'
            'import playhouse_pool, playhouse_pool.prometheus as p\n'
            'try:\n'
            '    p.register(playhouse_pool.PooledSqliteDatabase("x.db"))\n'
            'except ImportError as exc:\n'
            '    print(exc)\n')
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, check=True, cwd=root).stdout
    assert "pip install 'playhouse-pool[prometheus]'" in out


def test_the_three_histograms_count_the_workload(server_backend: Any) -> None:
    # Both connections opened ahead: a connect may take longer than this
    # timeout.
    db = server_backend.make_db(max_connections=2, min_connections=2,
                                timeout=0.05)
    registry = CollectorRegistry()
    register(db, registry=registry)
    db.warm_up()

    for _ in range(5):                        # 5 checkouts
        with db.connection_context():
            db.execute_sql('SELECT 1')
    with db.execution_context(with_transaction=False):
        with db.execution_context(with_transaction=False):   # the other
            with pytest.raises(pp.MaxConnectionsExceeded):
                with db.execution_context():
                    pass
            [held] = scrape_histograms(registry).values()
    [histograms] = scrape_histograms(registry).values()
    stats = db.pool_stats()

    assert (held[WAIT]['count'], held[USE]['count']) == (7, 5)
    assert histograms[WAIT]['count'] == stats['checkouts'] == 7
    assert histograms[USE]['count'] == 7                  # every check-in
    assert histograms[CREATE]['count'] == stats['created'] == 2
    assert histograms[USE]['sum'] == pytest.approx(stats['use_seconds'],
                                                   rel=1e-9)
    assert histograms[CREATE]['sum'] == pytest.approx(
        stats['connect_seconds'], rel=1e-9)
    for histogram in histograms.values():
        bounds = [le for le, _ in histogram['buckets']]
        counts = [n for _, n in histogram['buckets']]
        assert bounds[0] == pytest.approx(1e-5) and bounds[-2] == 50
        assert bounds[-1] == math.inf and counts[-1] == histogram['count']
        assert counts == sorted(counts)       # cumulative
    scraped = scrape(registry)
    assert scraped == {db.database: expected(stats)}


def test_histograms_count_from_the_collector_on(tmp_path: Any) -> None:
    db = make_db(tmp_path)
    with db.connection_context():            # before: not in them
        pass
    registry = CollectorRegistry()
    register(db, registry=registry)
    with db.connection_context():
        pass

    [histograms] = scrape_histograms(registry).values()
    assert histograms[WAIT]['count'] == 1
    assert histograms[CREATE]['count'] == 0
    assert db.pool_stats()['checkouts'] == 2
