"""The asyncio face is pwasyncio with one import changed: a model's
create/get/atomic/list/iterate, db.Model, aexecute(), run(), async with
db and close_pool() work as in peewee, on every backend; pwasyncio's
keywords are the pool's; a checkout the pool cannot serve raises what code
for either catches; the import says what it needs."""
import asyncio
import importlib
import sys

import peewee
import pytest
from peewee import CharField, IntegerField, OperationalError

from aio_backends import aio, aio_backend  # noqa: F401
from playhouse_pool import MaxConnectionsExceeded

pytestmark = pytest.mark.asyncio


def user_model(db):
    class User(db.Model):
        name = CharField(unique=True)
        age = IntegerField(default=0)

        class Meta:
            table_name = 'aio_user'
    return User


async def test_a_model_works_through_the_pool_as_through_pwasyncio(
        aio_backend):
    db = aio_backend.make_db(max_connections=4)
    User = user_model(db)
    await db.run(db.drop_tables, [User])
    await db.acreate_tables([User])
    try:
        async with db.atomic():
            await User.acreate(name='ann', age=3)
            await User.acreate(name='bob', age=5)
        with pytest.raises(peewee.IntegrityError):
            async with db.atomic():
                await User.acreate(name='cid')
                await User.acreate(name='ann')      # unique: rolled back
        assert (await User.aget(User.name == 'bob')).age == 5
        assert [u.name for u in await db.list(
            User.select().order_by(User.name))] == ['ann', 'bob']
        assert [u.name async for u in db.iterate(
            User.select().order_by(User.name.desc()))] == ['bob', 'ann']
        await db.aexecute(User.update(age=User.age + 1))
        assert await db.scalar(User.select(peewee.fn.SUM(User.age))) == 10
        assert await db.run(lambda: User.select().count()) == 2
        async with db:
            assert not db.is_closed()
            assert await db.count(User.select()) == 2
        assert db.is_closed()
    finally:
        await db.run(db.drop_tables, [User])
    await db.close_pool()
    stats = db.pool_stats()
    assert stats['open'] == stats['in_use'] == 0
    # The pool stays usable after close_pool(), as pwasyncio's.
    assert (await db.aexecute_sql('SELECT 1')).fetchone()[0] == 1
    await db.aclose()


async def test_each_task_gets_its_own_connection_and_gives_it_back(
        aio_backend):
    db = aio_backend.make_db(max_connections=3)
    seen = []

    async def request():
        await db.aconnect()
        seen.append(id(db._state.conn))
        await asyncio.sleep(0.01)
        assert (await db.aexecute_sql('SELECT 1')).fetchone()[0] == 1
        await db.aclose()

    await asyncio.gather(*(request() for _ in range(12)))
    stats = db.pool_stats()
    assert stats['in_use'] == 0 and stats['open'] <= 3
    assert stats['checkouts'] == 12 and len(set(seen)) <= 3


async def test_pwasyncio_keywords_are_the_pools_settings(tmp_path):
    db = aio.AsyncSqliteDatabase(str(tmp_path / 'k.db'), pool_size=5,
                                 pool_min_size=2, acquire_timeout=3)
    options = db._pool_options
    assert (options.max_connections, options.min_connections,
            options.timeout) == (5, 2, 3.0)
    assert (db._pool_size, db._pool_min_size, db._acquire_timeout) == (
        5, 2, 3.0)
    assert db.pool_stats()['max_connections'] == 5
    same = aio.AsyncSqliteDatabase(str(tmp_path / 'k.db'), pool_size=5,
                                   max_connections=5)
    assert same._pool_options.max_connections == 5


async def test_without_either_keyword_pwasyncios_defaults_apply(tmp_path):
    options = aio.AsyncSqliteDatabase(str(tmp_path / 'd.db'))._pool_options
    assert (options.max_connections, options.min_connections,
            options.timeout) == (10, 1, 10.0)


@pytest.mark.parametrize('alias, name, values', [
    ('pool_size', 'max_connections', (5, 8)),
    ('pool_min_size', 'min_connections', (1, 2)),
    ('acquire_timeout', 'timeout', (3, 4))])
async def test_one_setting_given_twice_differently_is_refused_naming_both(
        tmp_path, alias, name, values):
    with pytest.raises(ValueError) as refused:
        aio.AsyncSqliteDatabase(str(tmp_path / 'x.db'),
                                **{alias: values[0], name: values[1]})
    assert alias in str(refused.value) and name in str(refused.value)


@pytest.mark.parametrize('kwargs, error, words', [
    ({'pool_size': -1}, ValueError, 'pool_size (max_connections) must be'),
    ({'max_connections': 'x'}, TypeError, 'max_connections must be'),
    ({'acquire_timeout': -2}, ValueError, 'acquire_timeout (timeout)'),
    ({'min_connections': 3, 'pool_size': 2}, ValueError,
     'must not exceed'),
    ({'idle_timeout': 0}, ValueError, 'idle_timeout must be > 0')])
async def test_bad_values_raise_the_thread_pools_clear_errors(
        tmp_path, kwargs, error, words):
    with pytest.raises(error) as refused:
        aio.AsyncSqliteDatabase(str(tmp_path / 'x.db'), **kwargs)
    assert words in str(refused.value)


async def test_init_takes_the_pools_keywords_and_pwasyncios(tmp_path):
    db = aio.AsyncSqliteDatabase(None)
    db.init(str(tmp_path / 'i.db'), pool_size=3, stale_timeout=60)
    assert db._pool_options.max_connections == 3
    assert db._pool_options.stale_timeout == 60
    assert (await db.aexecute_sql('SELECT 1')).fetchone()[0] == 1
    await db.aclose()
    await db.close_pool()


async def test_a_checkout_that_times_out_is_both_max_connections_exceeded_and_operational_error(  # noqa: E501
        aio_backend):
    db = aio_backend.make_db(max_connections=1, timeout=0.05)
    holder = asyncio.Event()
    done = asyncio.Event()

    async def hold():
        await db.aconnect()
        holder.set()
        await done.wait()
        await db.aclose()

    task = asyncio.ensure_future(hold())
    task.set_name('holder-task')
    await holder.wait()
    with pytest.raises(aio.PoolTimeout) as timed_out:
        await db.aconnect()
    assert isinstance(timed_out.value, MaxConnectionsExceeded)
    assert isinstance(timed_out.value, ValueError)
    assert isinstance(timed_out.value, OperationalError)
    message = str(timed_out.value)
    assert 'timed out' in message and 'max_connections=1' in message
    assert "by task 'holder-task'" in message      # a task, not a thread
    assert db.pool_stats()['timeouts'] == 1
    done.set()
    await task


async def test_with_timeout_none_a_full_pool_refuses_at_once(aio_backend):
    db = aio_backend.make_db(max_connections=1, timeout=None)
    await db.aconnect()
    other = asyncio.ensure_future(db.aconnect())
    with pytest.raises(aio.PoolTimeout) as refused:
        await other
    assert 'timeout=None does not wait' in str(refused.value)
    await db.aclose()


async def test_a_deferred_database_says_so_when_used(tmp_path):
    db = aio.AsyncSqliteDatabase(None)
    with pytest.raises(peewee.InterfaceError) as refused:
        await db.aconnect()
    assert 'must be initialized' in str(refused.value)


async def test_an_in_memory_sqlite_database_is_one_shared_connection():
    db = aio.AsyncSqliteDatabase(':memory:', pool_size=4)
    assert db._pool_options.max_connections == 1
    await db.aexecute_sql('CREATE TABLE t (x)')
    await db.aexecute_sql('INSERT INTO t VALUES (1)')
    await db.aclose()

    async def count():
        value = (await db.aexecute_sql('SELECT count(*) FROM t')
                 ).fetchone()[0]
        await db.aclose()
        return value

    assert await asyncio.gather(count(), count()) == [1, 1]
    await db.close_pool()


def _reimport(monkeypatch):
    for name in list(sys.modules):
        if name.startswith('playhouse_pool.asyncio'):
            monkeypatch.delitem(sys.modules, name)
    return importlib.import_module('playhouse_pool.asyncio')


async def test_importing_it_on_a_peewee_before_4_3_says_what_it_needs(
        monkeypatch):
    monkeypatch.setattr(peewee, '__version__', '4.2.0')
    with pytest.raises(ImportError) as refused:
        _reimport(monkeypatch)
    message = str(refused.value)
    assert 'needs peewee >= 4.3' in message and '4.2.0' in message
    assert "pip install 'playhouse-pool[asyncio-postgres]'" in message


async def test_importing_it_without_greenlet_says_what_it_needs(monkeypatch):
    monkeypatch.setitem(sys.modules, 'greenlet', None)
    with pytest.raises(ImportError) as refused:
        _reimport(monkeypatch)
    assert 'needs greenlet' in str(refused.value)
