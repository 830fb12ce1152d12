"""The pool's keywords on the asyncio face, with the thread pool's
meanings: configure (a coroutine function too), callable connect keywords,
reset_session, idle_timeout, leak_timeout, ping_after=0; and every piece
of the pool's own I/O ends by its deadline (rule 9)."""
import asyncio
import logging
import time

import pytest
from peewee import OperationalError

from aio_backends import (AsyncpgBackend, aio_backend,  # noqa: F401
                          aio_server_backend, eventually, settled)
from conftest import POSTGRES_URL, _require, _url_kwargs
from playhouse_pool.benchmark.proxy import LatencyProxy
from playhouse_pool.errors import ConfigureError

pytestmark = pytest.mark.asyncio


async def one(db, sql):
    """``sql``'s first value, on a connection of its own checkout."""
    async with db:
        return (await db.aexecute_sql(sql)).fetchone()[0]


@pytest.mark.parametrize('kind', ['function', 'coroutine function'])
async def test_configure_runs_once_on_each_new_connection(aio_backend, kind):
    seen = []
    if kind == 'function':
        def configure(conn):
            seen.append(conn)
    else:
        async def configure(conn):
            await asyncio.sleep(0)
            seen.append(conn)
    db = aio_backend.make_db(max_connections=2, configure=configure)
    for _ in range(3):
        await one(db, 'SELECT 1')
    assert len(seen) == db.pool_stats()['created'] == 1
    # The driver's connection, not pwasyncio's wrapper.
    assert seen[0] is next(iter(db._lender.ledger.idle)).conn.conn


async def test_a_failing_configure_discards_its_connection(aio_backend):
    def configure(conn):
        raise RuntimeError('no')

    db = aio_backend.make_db(max_connections=1, min_connections=0,
                             configure=configure, timeout=None)
    with pytest.raises(ConfigureError):
        await db.aconnect()
    await settled(db)
    assert db.pool_stats()['open'] == 0


async def test_a_callable_connect_keyword_is_called_for_each_connection(
        tmp_path):
    _require(AsyncpgBackend)
    backend = AsyncpgBackend(tmp_path)
    calls = []

    def settings():
        calls.append(1)
        return {'application_name': backend.tag}

    try:
        db = backend.make_db(max_connections=2, server_settings=settings)
        held = asyncio.Event()

        async def hold():
            async with db:
                await db.aexecute_sql('SELECT 1')
                await held.wait()

        tasks = [asyncio.ensure_future(hold()) for _ in range(2)]
        await eventually(lambda: db.pool_stats()['in_use'] == 2)
        assert len(calls) == 2 and len(backend.server_ids()) == 2
        held.set()
        await asyncio.gather(*tasks)
    finally:
        await backend.aclose()


# A session setting, how to read it, and what a new session reads.
SESSION = {'postgres': ("SET statement_timeout = '1234ms'",
                        'SHOW statement_timeout', '0'),
           'mysql': ('SET @pp_reset = 5', 'SELECT @pp_reset', None)}


async def test_reset_session_keeps_one_checkouts_settings_from_the_next(
        aio_server_backend):
    setting, check, default = SESSION[aio_server_backend.server]
    db = aio_server_backend.make_db(max_connections=1, reset_session=True)
    async with db:
        await db.aexecute_sql(setting)
        first = db._state.conn
    await settled(db)
    async with db:
        assert db._state.conn is first          # the same connection
        assert (await db.aexecute_sql(check)).fetchone()[0] == default


async def test_idle_connections_past_idle_timeout_are_closed_down_to_the_minimum(  # noqa: E501
        aio_backend):
    db = aio_backend.make_db(max_connections=3, min_connections=1,
                             idle_timeout=0.2)
    held = asyncio.Event()

    async def hold():
        async with db:
            await db.aexecute_sql('SELECT 1')
            await held.wait()

    tasks = [asyncio.ensure_future(hold()) for _ in range(3)]
    await eventually(lambda: db.pool_stats()['in_use'] == 3)
    held.set()
    await asyncio.gather(*tasks)
    await eventually(lambda: db.pool_stats()['open'] == 1,
                     what='the housekeeper to close two')
    await settled(db)
    assert db.pool_stats()['closed'] == 2


async def test_a_connection_held_past_leak_timeout_is_reported_with_its_call_site(  # noqa: E501
        aio_backend, caplog):
    db = aio_backend.make_db(max_connections=1, leak_timeout=0.1)
    with caplog.at_level(logging.WARNING, logger='playhouse_pool'):
        await db.aconnect()
        await eventually(lambda: 'leak_timeout' in caplog.text,
                         what='the leak report')
    assert 'test_asyncio_options.py' in caplog.text
    assert 'checked out by task ' in caplog.text
    await db.aclose()


async def test_with_ping_after_0_a_checkout_pings_its_connection(
        aio_server_backend):
    backend = aio_server_backend
    db = backend.make_db(max_connections=1, ping_after=0)
    async with db:
        await db.aexecute_sql('SELECT 1')
    [record] = list(db._lender.ledger.idle)
    conn_id = backend.local_id(record.conn)
    before = backend.last_activity(conn_id)
    await db.aconnect()
    assert backend.last_activity(conn_id) != before
    await db.aclose()


async def test_with_ping_after_0_a_connection_handed_at_its_deadline_still_gets_its_ping(  # noqa: E501
        aio_server_backend):
    # A waiter may be handed a connection as its deadline passes: the
    # checkout's ping still gets a moment, and a healthy connection is kept.
    db = aio_server_backend.make_db(max_connections=1, ping_after=0,
                                    timeout=10)
    async with db:
        await db.aexecute_sql('SELECT 1')
    lender = db._lender
    [record] = list(lender.ledger.idle)
    now = time.monotonic()
    taken = lender.ledger.take_idle(None, now)
    assert taken is record
    assert await lender._ping(record, now, deadline=now - 0.001) is True
    lender.ledger.checkin(record.key, True, time.monotonic())
    stats = db.pool_stats()
    assert (stats['io_timeouts'], stats['closed'], stats['idle']) == (0, 0, 1)


async def test_a_connect_to_a_silent_host_ends_at_the_timeout_and_the_pool_recovers(  # noqa: E501
        tmp_path):
    _require(AsyncpgBackend)
    target = _url_kwargs(POSTGRES_URL)
    with LatencyProxy(target['host'], target.get('port', 5432)) as proxy:
        backend = AsyncpgBackend(tmp_path)
        try:
            db = backend.make_db(max_connections=1, min_connections=0,
                                 timeout=0.3, host='127.0.0.1',
                                 port=proxy.port)
            proxy.hang(True)
            start = time.monotonic()
            with pytest.raises(OperationalError) as failed:
                await db.aconnect()
            assert time.monotonic() - start < 3.0
            assert 'timed out' in str(failed.value)
            await eventually(lambda: db.pool_stats()['io_timeouts'] >= 1)
            proxy.hang(False)
            await settled(db)
            assert await one(db, 'SELECT 7') == 7
        finally:
            await backend.aclose()
