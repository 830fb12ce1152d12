"""A pool belongs to one event loop, the one of its first checkout (never
its construction): used from another loop once that one is closed or
stopped (pytest's loop per test), it forgets the old loop's connections
with a warning and serves the new loop; while that one runs in another
thread, RuntimeError says why. pool_stats() has the thread pool's keys,
and both metrics collectors work on an async database unchanged."""
import asyncio
import gc
import logging
import threading

import pytest

from aio_backends import (aio_backend, eventually,  # noqa: F401
                          AiosqliteBackend)
import playhouse_pool as pp


async def use(db, count=2):
    """``count`` requests, each holding its connection until all have one;
    the connections they got. Then the pool's jobs are done."""
    got = []
    all_held = asyncio.Event()

    async def request():
        async with db:
            await db.aexecute_sql('SELECT 1')
            got.append(db._state.conn)
            if len(got) == count:
                all_held.set()
            await all_held.wait()

    await asyncio.gather(*(request() for _ in range(count)))
    await eventually(lambda: db._lender.ledger.slots.reserved == 0)
    return set(got)


def test_a_pool_binds_to_the_loop_of_its_first_checkout(aio_backend):
    db = aio_backend.make_db(max_connections=2)
    assert db._lender.loop is None          # not at construction

    async def first():
        await use(db)
        return asyncio.get_running_loop()

    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(first()) is db._lender.loop
        # The same loop again: the same pool, its connections reused.
        created = db.pool_stats()['created']
        loop.run_until_complete(use(db))
        assert db.pool_stats()['created'] == created
        loop.run_until_complete(db.close_pool())
    finally:
        loop.close()


def test_a_pool_used_on_a_new_loop_after_its_own_closed_starts_afresh(
        aio_backend, caplog):
    db = aio_backend.make_db(max_connections=2)
    asyncio.run(use(db))
    assert db.pool_stats()['open'] == 2
    with caplog.at_level(logging.WARNING, logger='playhouse_pool'):
        second = asyncio.run(use(db))
    assert 'forgotten' in caplog.text and 'closed' in caplog.text
    assert len(second) == 2
    stats = db.pool_stats()
    assert (stats['open'], stats['in_use'], stats['created']) == (2, 0, 4)
    if aio_backend.server != 'sqlite':
        # Not closed by the pool, nor touched: the old loop's sockets go
        # when their objects do.
        gc.collect()
        asyncio.run(_until(lambda: len(aio_backend.server_ids()) == 2))
    asyncio.run(db.close_pool())


async def _until(predicate):
    await eventually(predicate)


def test_a_pool_used_while_its_loop_runs_in_another_thread_is_refused(
        aio_backend):
    db = aio_backend.make_db(max_connections=2)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(use(db), loop).result(10)
        with pytest.raises(RuntimeError) as refused:
            asyncio.run(use(db))
        message = str(refused.value)
        assert 'running in another thread' in message
        assert 'a pool serves one event loop' in message
        # Its own loop goes on being served.
        asyncio.run_coroutine_threadsafe(use(db), loop).result(10)
        asyncio.run_coroutine_threadsafe(db.close_pool(), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_recycle_from_another_thread_runs_on_the_pools_loop(tmp_path):
    backend = AiosqliteBackend(tmp_path)
    db = backend.make_db(max_connections=2, min_connections=0)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:
        run = asyncio.run_coroutine_threadsafe
        before = run(use(db), loop).result(10)
        assert db.recycle() == 2                # from this thread

        async def replaced():
            await eventually(lambda: db._lender.ledger.slots.reserved == 0
                             and db.pool_stats()['open'] == 2)
            return {r.conn for r in db._lender.ledger.idle}

        assert not run(replaced(), loop).result(10) & before
        run(db.close_pool(), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.mark.asyncio
async def test_pool_stats_have_the_thread_pools_keys(aio_backend, tmp_path):
    db = aio_backend.make_db(max_connections=3)
    await use(db, 3)
    stats = db.pool_stats()
    threads = pp.PooledSqliteDatabase(str(tmp_path / 't.db'))
    assert set(threads.pool_stats()) <= set(stats)
    assert stats['open'] == stats['in_use'] + stats['idle'] == 3
    assert (stats['checkouts'], stats['created']) == (3, 3)
    assert stats['wait_seconds'] >= 0 and stats['use_seconds'] > 0


@pytest.mark.asyncio
async def test_the_prometheus_collector_reads_an_async_pool(aio_backend):
    pytest.importorskip('prometheus_client')
    from prometheus_client import CollectorRegistry, generate_latest
    from playhouse_pool.prometheus import register
    db = aio_backend.make_db(max_connections=2)
    registry = CollectorRegistry()
    register(db, registry=registry)
    await use(db, 2)
    text = generate_latest(registry).decode()
    assert 'playhouse_pool_connections_open{' in text
    values = {line.split('{')[0]: float(line.rsplit(' ', 1)[1])
              for line in text.splitlines()
              if line and not line.startswith('#')}
    assert values['playhouse_pool_connections_open'] == 2
    assert values['playhouse_pool_checkouts_total'] == 2
    assert values['playhouse_pool_wait_time_seconds_count'] == 2
    assert values['playhouse_pool_use_time_seconds_count'] == 2


@pytest.mark.asyncio
async def test_opentelemetry_instruments_an_async_pool(aio_backend):
    pytest.importorskip('opentelemetry.sdk.metrics')
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from playhouse_pool.otel import instrument
    reader = InMemoryMetricReader()
    db = aio_backend.make_db(max_connections=2)
    instruments = instrument(db, MeterProvider(metric_readers=[reader]))
    await use(db, 2)
    found = {}
    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            found.update((m.name, m) for m in scope.metrics)
    counts = {p.attributes['db.client.connection.state']: p.value
              for p in found['db.client.connection.count'].data.data_points}
    assert counts == {'idle': 2, 'used': 0}
    [wait] = found['db.client.connection.wait_time'].data.data_points
    assert wait.count == 2
    instruments.close()
