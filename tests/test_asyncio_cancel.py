"""Cancellation at any await never loses a slot, never hands a connection
to a cancelled task, and never returns a connection mid-protocol to the
pool: a cancel mid-statement, inside atomic(), at check-in, each made to
happen (the statement held until the test lets it go), on every
backend."""
import asyncio
import logging

import pytest
from peewee import CharField

from aio_backends import (aio_backend, eventually, idle_unclean,  # noqa: F401
                          settled)

pytestmark = pytest.mark.asyncio


async def cancel_inside(task, gate):
    """Cancel ``task`` once its statement is running; its error."""
    await gate.inside()
    task.cancel()
    try:
        await task
    except BaseException as exc:        # the cancel, or what replaced it
        return exc
    finally:
        gate.release()
    pytest.fail('the task was not cancelled')


async def serves_cleanly(db, backend, count):
    """``count`` requests at once each get a connection that answers its
    own statement; then nothing is checked out and, on a server, the pool
    counts what the server counts."""
    async def request(value):
        async with db:
            row = (await db.aexecute_sql('SELECT %d' % value)).fetchone()
            assert row[0] == value
            assert not db.in_transaction()

    await asyncio.gather(*(request(v) for v in range(count)))
    await settled(db)
    stats = db.pool_stats()
    assert stats['in_use'] == 0 and stats['waiting'] == 0
    if backend.server != 'sqlite':
        await eventually(lambda: len(backend.server_ids())
                         == db.pool_stats()['open'],
                         what='the server to count what the pool counts')


@pytest.mark.parametrize('ends_with', ['aclose', 'task end'])
async def test_a_cancel_mid_statement_loses_nothing(aio_backend, ends_with):
    db = aio_backend.make_db(max_connections=2, timeout=10)
    gate = aio_backend.gate(db)

    async def request():
        if ends_with == 'aclose':
            async with db:
                await db.aexecute_sql(gate.sql)
        else:
            await db.aexecute_sql(gate.sql)

    error = await cancel_inside(asyncio.ensure_future(request()), gate)
    assert isinstance(error, asyncio.CancelledError)
    await eventually(lambda: db.pool_stats()['in_use'] == 0,
                     what='the connection to come back')
    # Back, but not to be handed out before it is clean: out for a reset
    # or a replacement until then.
    assert idle_unclean(db) == []
    if ends_with == 'task end':
        assert db.pool_stats()['reclaimed'] == 1
    await settled(db)
    assert idle_unclean(db) == []
    await serves_cleanly(db, aio_backend, 6)


async def test_a_cancel_inside_atomic_rolls_back_and_loses_nothing(
        aio_backend):
    db = aio_backend.make_db(max_connections=2, timeout=10)
    gate = aio_backend.gate(db)

    class Note(db.Model):
        text = CharField()

        class Meta:
            table_name = 'aio_note'

    await db.run(db.drop_tables, [Note])
    await db.acreate_tables([Note])
    await db.aclose()
    try:
        async def request():
            async with db:
                async with db.atomic():
                    await Note.acreate(text='never')
                    await db.aexecute_sql(gate.sql)

        error = await cancel_inside(asyncio.ensure_future(request()), gate)
        # Not aiomysql's InterfaceError for the ROLLBACK on the connection
        # it closed: the cancel itself.
        assert isinstance(error, asyncio.CancelledError)
        assert idle_unclean(db) == []
        await settled(db)
        async with db:
            assert await db.count(Note.select()) == 0
        await serves_cleanly(db, aio_backend, 6)
    finally:
        await db.run(db.drop_tables, [Note])
        await db.aclose()


async def test_a_cancel_during_aclose_loses_nothing(aio_backend):
    db = aio_backend.make_db(max_connections=1, timeout=10)

    async def request():
        await db.aconnect()
        await db.aexecute_sql('SELECT 1')
        asyncio.current_task().cancel()     # lands at the next await
        await db.aclose()
        await asyncio.sleep(1)

    with pytest.raises(asyncio.CancelledError):
        await asyncio.ensure_future(request())
    stats = db.pool_stats()
    assert (stats['in_use'], stats['idle'], stats['reclaimed']) == (0, 1, 0)
    await serves_cleanly(db, aio_backend, 3)


async def test_a_cancel_while_waiting_for_a_connect_loses_no_slot(
        aio_backend):
    db = aio_backend.make_db(max_connections=1, min_connections=0,
                             timeout=10)
    gate = asyncio.Event()
    original = db._open_async

    async def held_open(params, seconds):
        await gate.wait()
        return await original(params, seconds)

    db._open_async = held_open
    task = asyncio.ensure_future(db.aconnect())
    await eventually(lambda: db.pool_stats()['waiting'] == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.set()                  # the connect lands: idle, not lost
    await eventually(lambda: db.pool_stats()['idle'] == 1)
    db._open_async = original
    await serves_cleanly(db, aio_backend, 3)


async def test_a_connection_checked_in_mid_transaction_is_rolled_back_off_the_task(  # noqa: E501
        aio_backend):
    db = aio_backend.make_db(max_connections=1, timeout=10)
    await db.aexecute_sql('CREATE TABLE IF NOT EXISTS aio_t (x INTEGER)')
    await db.aexecute_sql('DELETE FROM aio_t')
    await db.aexecute_sql('BEGIN')
    await db.aexecute_sql('INSERT INTO aio_t VALUES (1)')
    await db.aclose()
    # aclose() awaited nothing: the rollback is a job's, the connection
    # out of the pool, its slot held, until it is done.
    stats = db.pool_stats()
    assert (stats['in_use'], stats['idle'], stats['open']) == (0, 0, 0)
    assert db._lender.ledger.slots.reserved == 1
    await settled(db)
    assert idle_unclean(db) == [] and db.pool_stats()['idle'] == 1
    assert (await db.aexecute_sql('SELECT count(*) FROM aio_t')
            ).fetchone()[0] == 0
    await db.aexecute_sql('DROP TABLE aio_t')
    await db.aclose()


async def test_a_connection_left_in_a_transaction_by_an_ended_task_is_reclaimed_and_rolled_back(  # noqa: E501
        aio_backend, caplog):
    db = aio_backend.make_db(max_connections=1, timeout=10)
    await db.aexecute_sql('CREATE TABLE IF NOT EXISTS aio_t (x INTEGER)')
    await db.aexecute_sql('DELETE FROM aio_t')
    await db.aclose()

    async def request():
        await db.aexecute_sql('BEGIN')
        await db.aexecute_sql('INSERT INTO aio_t VALUES (1)')
        # Ends without aclose(): reclaimed.

    with caplog.at_level(logging.WARNING, logger='playhouse_pool'):
        await asyncio.ensure_future(request())
        await eventually(lambda: db.pool_stats()['in_use'] == 0)
        await settled(db)
    assert db.pool_stats()['reclaimed'] == 1
    assert any('Reclaimed connection' in r.getMessage()
               for r in caplog.records)
    assert (await db.aexecute_sql('SELECT count(*) FROM aio_t')
            ).fetchone()[0] == 0
    await db.aexecute_sql('DROP TABLE aio_t')
    await db.aclose()
