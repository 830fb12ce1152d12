"""Tasks that wait for a connection are served first come, first served,
by direct hand-off; a task cancelled while it waits leaves the line and is
never handed a connection; a waiter's deadline ends its wait; max_waiting
turns the next one away."""
import asyncio

import pytest

from aio_backends import aio, aio_backend, eventually  # noqa: F401

pytestmark = pytest.mark.asyncio


async def hold(db, held, release):
    """Check out, say so, keep the connection until ``release``."""
    await db.aconnect()
    held.set()
    await release.wait()
    await db.aclose()


async def queue_up(db, count, body):
    """Start ``count`` tasks running ``body(index)``, each in line
    (waiting) before the next starts."""
    tasks = []
    for index in range(count):
        tasks.append(asyncio.ensure_future(body(index)))
        await eventually(lambda n=index + 1: db.pool_stats()['waiting'] == n,
                         what='task %d to wait' % index)
    return tasks


def noting_the_first(db, first, served):
    """A request body that notes (its index, whether it was handed the
    connection ``first``) in ``served``."""
    async def request(index):
        await db.aconnect()
        served.append((index, db._state.conn is first))
        await db.aclose()
    return request


async def test_waiting_tasks_are_served_in_arrival_order(aio_backend):
    db = aio_backend.make_db(max_connections=1, timeout=10)
    await db.aconnect()
    first = db._state.conn
    served = []
    request = noting_the_first(db, first, served)

    tasks = await queue_up(db, 5, request)
    await db.aclose()
    await asyncio.gather(*tasks)
    assert served == [(i, True) for i in range(5)]
    assert db.pool_stats()['created'] == 1


async def test_a_task_cancelled_while_waiting_leaves_the_line(aio_backend):
    db = aio_backend.make_db(max_connections=1, timeout=10)
    await db.aconnect()
    served = []

    async def request(index):
        await db.aconnect()
        served.append(index)
        await db.aclose()

    tasks = await queue_up(db, 3, request)
    tasks[1].cancel()
    with pytest.raises(asyncio.CancelledError):
        await tasks[1]
    assert db.pool_stats()['waiting'] == 2
    await db.aclose()
    await asyncio.gather(tasks[0], tasks[2])
    assert served == [0, 2]
    stats = db.pool_stats()
    assert (stats['in_use'], stats['open'], stats['timeouts']) == (0, 1, 0)


async def test_a_task_handed_a_connection_as_it_is_cancelled_passes_it_on(
        aio_backend):
    db = aio_backend.make_db(max_connections=1, timeout=10)
    await db.aconnect()
    first = db._state.conn
    served = []
    request = noting_the_first(db, first, served)

    tasks = await queue_up(db, 2, request)
    # The hand-off resolves task 0's future; the cancel lands in the same
    # loop iteration, before task 0 runs: it never sees the connection.
    await db.aclose()
    tasks[0].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert served == [(1, True)]
    stats = db.pool_stats()
    assert (stats['in_use'], stats['open'], stats['idle']) == (0, 1, 1)


async def test_a_waiter_gives_up_at_its_deadline(aio_backend):
    db = aio_backend.make_db(max_connections=1, timeout=0.1)
    await db.aconnect()
    loop = asyncio.get_running_loop()

    async def request():
        await db.aconnect()

    start = loop.time()
    with pytest.raises(aio.PoolTimeout):
        await asyncio.ensure_future(request())
    assert 0.09 <= loop.time() - start < 2.0
    stats = db.pool_stats()
    assert (stats['waiting'], stats['timeouts']) == (0, 1)
    await db.aclose()
    assert db.pool_stats()['idle'] == 1


async def test_each_waiter_gives_up_at_its_own_deadline(aio_backend):
    db = aio_backend.make_db(max_connections=1, timeout=0.2)
    await db.aconnect()
    loop = asyncio.get_running_loop()
    ended = []

    async def request():
        start = loop.time()
        try:
            await db.aconnect()
        except aio.PoolTimeout:
            ended.append(loop.time())
        return start

    first = asyncio.ensure_future(request())
    await asyncio.sleep(0.1)
    second = asyncio.ensure_future(request())
    starts = await asyncio.gather(first, second)
    assert len(ended) == 2
    for start, end in zip(starts, ended):
        assert 0.19 <= end - start < 0.5
    assert ended[1] - ended[0] >= 0.05
    await db.aclose()


async def test_beyond_max_waiting_a_task_is_turned_away_at_once(
        aio_backend):
    db = aio_backend.make_db(max_connections=1, max_waiting=1, timeout=10)
    await db.aconnect()

    async def request(index):
        await db.aconnect()
        await db.aclose()

    [waiting] = await queue_up(db, 1, request)

    async def one_more():
        await db.aconnect()

    with pytest.raises(aio.PoolTimeout) as refused:
        await asyncio.ensure_future(one_more())
    assert 'max_waiting=1 tasks are already waiting' in str(refused.value)
    await db.aclose()
    await waiting


async def test_a_waiter_takes_a_checked_in_connection_rather_than_wait_for_a_new_one(  # noqa: E501
        aio_backend):
    db = aio_backend.make_db(max_connections=2, min_connections=0,
                             timeout=10)
    await db.aconnect()
    gate = asyncio.Event()
    opened = []
    original = db._open_async

    async def slow_open(params, seconds):
        await gate.wait()
        conn = await original(params, seconds)
        opened.append(conn)
        return conn

    db._open_async = slow_open

    async def request():
        await db.aconnect()
        await db.aclose()

    task = asyncio.ensure_future(request())
    await eventually(lambda: db.pool_stats()['waiting'] == 1)
    await db.aclose()                       # served by this one, at once
    await task
    assert opened == []
    gate.set()                              # the connect lands idle
    await eventually(lambda: db.pool_stats()['open'] == 2)
