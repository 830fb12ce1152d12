"""A connection's life on the event loop: dead idle connections are never
handed out, and a healthy checkout sends nothing; growth, the minimum,
ageing and replacement run on the loop's tasks, never a request's; tasks
that end holding a connection have it reclaimed; close_all(timeout) and
close_pool() drain; recycle() replaces everything while serving."""
import asyncio
import logging

import pytest

from aio_backends import (aio_backend, aio_server_backend,  # noqa: F401
                          eventually, idle_unclean, settled)
from peewee import InterfaceError

from playhouse_pool import PoolClosedError

pytestmark = pytest.mark.asyncio


def idle_conns(db):
    return [r.conn for r in db._lender.ledger.idle]


async def warm(db, count):
    """``count`` connections opened and idle."""
    held = asyncio.Event()
    got = []

    async def hold():
        await db.aconnect()
        got.append(1)
        if len(got) == count:
            held.set()
        await held.wait()
        await db.aclose()

    await asyncio.gather(*(hold() for _ in range(count)))
    await settled(db)


def opens_on_tasks(db):
    """Record the task each connect of ``db`` runs on."""
    tasks = []
    original = db._open_async

    async def recorded(params, seconds):
        tasks.append(asyncio.current_task())
        return await original(params, seconds)

    db._open_async = recorded
    return tasks


async def test_killed_idle_connections_are_never_handed_out(
        aio_server_backend):
    backend = aio_server_backend
    db = backend.make_db(max_connections=4, min_connections=0, timeout=10)
    await warm(db, 4)
    conns = idle_conns(db)
    killed = [backend.local_id(conn) for conn in conns[:3]]
    for conn_id in killed:
        backend.kill_now(conn_id)
    # The loop reads each server's goodbye (an error, an EOF).
    await eventually(lambda: all(c.stale() for c in conns[:3]),
                     what='the loop to see the kills')
    errors = []

    async def request():
        try:
            async with db:
                await db.aexecute_sql('SELECT 1')
                await asyncio.sleep(0.01)
        except Exception as exc:
            errors.append(exc)

    await asyncio.gather(*(request() for _ in range(8)))
    assert errors == []
    await settled(db)
    assert not set(killed) & backend.server_ids()
    assert db.pool_stats()['created'] == 7
    assert len(backend.server_ids()) == db.pool_stats()['open']


async def test_a_healthy_checkout_sends_nothing(aio_server_backend):
    backend = aio_server_backend
    db = backend.make_db(max_connections=1, timeout=10)
    await warm(db, 1)
    [conn] = idle_conns(db)
    conn_id = backend.local_id(conn)
    before = backend.last_activity(conn_id)
    await db.aconnect()
    assert db._state.conn is conn
    assert backend.last_activity(conn_id) == before
    await db.aclose()


async def test_the_housekeeper_replaces_a_dead_idle_connection_with_no_checkout(  # noqa: E501
        aio_server_backend):
    backend = aio_server_backend
    db = backend.make_db(max_connections=2, min_connections=2,
                         ping_after=0.2, timeout=10)
    await warm(db, 2)
    checkouts = db.pool_stats()['checkouts']
    conn = idle_conns(db)[0]
    conn_id = backend.local_id(conn)
    backend.kill_now(conn_id)
    await eventually(lambda: conn_id not in backend.server_ids()
                     and len(backend.server_ids()) == 2, what='a new one')
    await settled(db)
    assert db.pool_stats()['checkouts'] == checkouts
    assert conn not in idle_conns(db)


async def test_the_minimum_is_opened_by_the_loops_tasks(aio_backend):
    db = aio_backend.make_db(max_connections=4, min_connections=3,
                             timeout=10)
    opened_on = opens_on_tasks(db)
    await db.aexecute_sql('SELECT 1')
    request = asyncio.current_task()
    await db.aclose()
    await eventually(lambda: db.pool_stats()['open'] == 3)
    assert len(opened_on) == 3 and request not in opened_on


async def test_warm_up_opens_the_minimum_before_any_checkout(aio_backend):
    db = aio_backend.make_db(max_connections=4, min_connections=3,
                             timeout=10)
    await db.warm_up(10)
    stats = db.pool_stats()
    assert (stats['open'], stats['checkouts']) == (3, 0)


async def test_ageing_replaces_connections_on_the_loops_tasks(aio_backend):
    db = aio_backend.make_db(max_connections=2, min_connections=2,
                             stale_timeout=0.3, timeout=10)
    await warm(db, 2)
    first = idle_conns(db)      # kept: no id of theirs is reused
    opened_on = opens_on_tasks(db)
    requests = set()

    async def request():
        requests.add(asyncio.current_task())
        async with db:
            await db.aexecute_sql('SELECT 1')
        await asyncio.sleep(0.02)

    loop = asyncio.get_running_loop()
    end = loop.time() + 1.0
    while loop.time() < end:
        await asyncio.gather(request(), request())
    await settled(db)
    assert len(opened_on) >= 2
    assert not requests & set(opened_on)
    assert not any(c in first for c in idle_conns(db))
    assert db.pool_stats()['open'] == 2


async def test_growth_is_opened_by_a_task_of_the_loop(aio_backend):
    db = aio_backend.make_db(max_connections=2, min_connections=0,
                             timeout=10)
    opened_on = opens_on_tasks(db)
    await db.aconnect()
    assert len(opened_on) == 1
    assert opened_on[0] is not asyncio.current_task()
    await db.aclose()


async def test_a_task_that_ends_holding_a_connection_has_it_reclaimed(
        aio_backend, caplog):
    db = aio_backend.make_db(max_connections=1, timeout=10)

    async def leaky():
        await db.aexecute_sql('SELECT 1')

    with caplog.at_level(logging.WARNING, logger='playhouse_pool'):
        await asyncio.ensure_future(leaky())
        await eventually(lambda: db.pool_stats()['idle'] == 1)
    stats = db.pool_stats()
    assert (stats['reclaimed'], stats['in_use']) == (1, 0)
    assert 'from task ' in caplog.text
    assert 'ended without closing it' in caplog.text
    assert (await db.aexecute_sql('SELECT 2')).fetchone()[0] == 2
    await db.aclose()


async def test_close_all_with_a_timeout_drains_then_closes(aio_backend):
    db = aio_backend.make_db(max_connections=1, timeout=10)
    held, release = asyncio.Event(), asyncio.Event()

    async def holder():
        async with db:
            await db.aexecute_sql('SELECT 1')
            held.set()
            await release.wait()
            await db.aexecute_sql('SELECT 1')

    holding = asyncio.ensure_future(holder())
    await held.wait()
    waiter = asyncio.ensure_future(db.aconnect())
    await eventually(lambda: db.pool_stats()['waiting'] == 1)
    closing = asyncio.ensure_future(db.close_all(timeout=10))
    with pytest.raises(PoolClosedError):
        await waiter
    with pytest.raises(PoolClosedError):
        await asyncio.ensure_future(db.aconnect())
    assert not closing.done()           # the holder still has it
    release.set()
    await holding
    assert await closing == 1
    stats = db.pool_stats()
    assert (stats['open'], stats['closed']) == (0, 1)
    if aio_backend.server != 'sqlite':
        await eventually(lambda: not aio_backend.server_ids())
    # Usable again.
    assert (await db.aexecute_sql('SELECT 3')).fetchone()[0] == 3
    await db.aclose()


async def test_close_all_without_a_timeout_closes_held_connections_too(
        aio_backend):
    db = aio_backend.make_db(max_connections=2, timeout=10)
    await warm(db, 2)
    held = asyncio.Event()
    done = asyncio.Event()

    async def holder():
        await db.aconnect()
        held.set()
        await done.wait()
        await db.aclose()       # the pool closed it: nothing to give back

    task = asyncio.ensure_future(holder())
    await held.wait()
    assert await db.close_all() == 2
    done.set()
    await task
    stats = db.pool_stats()
    assert (stats['open'], stats['in_use'], stats['idle']) == (0, 0, 0)


async def test_close_pool_waits_for_a_running_task_then_closes(
        aio_backend):
    db = aio_backend.make_db(max_connections=2, timeout=10)
    held, release = asyncio.Event(), asyncio.Event()

    async def holder():
        async with db:
            held.set()
            await release.wait()
            # Under way when close_pool() began: it goes on to its end.
            return (await db.aexecute_sql('SELECT 5')).fetchone()[0]

    task = asyncio.ensure_future(holder())
    await held.wait()
    closing = asyncio.ensure_future(db.close_pool())
    await eventually(lambda: db._closing)
    with pytest.raises(InterfaceError):      # a new checkout is refused
        await asyncio.ensure_future(db.aconnect())
    assert not closing.done()
    release.set()
    assert await task == 5
    await closing
    assert db.pool_stats()['open'] == 0


async def test_close_all_cancelled_while_it_closes_still_frees_every_slot(
        aio_backend):
    db = aio_backend.make_db(max_connections=2, min_connections=0,
                             timeout=10)
    await warm(db, 2)
    closing_started, finish = asyncio.Event(), asyncio.Event()
    original = db._close_async

    async def slow_close(conn):
        closing_started.set()
        await finish.wait()
        await original(conn)

    db._close_async = slow_close
    closing = asyncio.ensure_future(db.close_all())
    await closing_started.wait()
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    finish.set()
    # The closes run to their end, and their slots come free.
    await eventually(lambda: db._lender.ledger.slots.closing == 0,
                     what='the slots of the closed connections')
    db._close_async = original
    if aio_backend.server != 'sqlite':
        await eventually(lambda: not aio_backend.server_ids())
    stats = db.pool_stats()
    assert (stats['open'], stats['closed']) == (0, 2)

    async def query():
        async with db:
            return (await db.aexecute_sql('SELECT 4')).fetchone()[0]
    assert await asyncio.gather(query(), query()) == [4, 4]


async def test_recycle_replaces_every_connection_while_serving(
        aio_backend):
    db = aio_backend.make_db(max_connections=3, min_connections=0,
                             timeout=10)
    await warm(db, 3)
    old = idle_conns(db)        # kept: no id of theirs is reused
    await db.aconnect()
    assert db._state.conn in old
    assert db.recycle() == 3
    await settled(db)
    assert not any(c in old for c in idle_conns(db))
    await db.aclose()           # the held one is replaced at check-in
    await settled(db)
    assert not any(c in old for c in idle_conns(db))
    assert db.pool_stats()['recycled'] == 3
    assert idle_unclean(db) == []
