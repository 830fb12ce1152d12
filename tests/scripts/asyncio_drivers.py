"""The experiments behind docs/asyncio-notes.rst, section 3 and 4: what
each asyncio driver exposes cheaply about a connection's liveness, what
state a cancelled query leaves it in, and pwasyncio's traps.

    python tests/scripts/asyncio_drivers.py [SECTION]

SECTION: postgres, mysql, sqlite, pwasyncio, waitfor (default: all).

Against the test servers (PLAYHOUSE_POOL_TEST_POSTGRES, ..._MYSQL, as the
test suite); every section prints what it saw. Not a test: the behaviour of
drivers, recorded, to be run again when a driver changes.
"""
import asyncio
import os
import sys
import tempfile
import time
from urllib.parse import urlparse

POSTGRES_URL = os.environ.get('PLAYHOUSE_POOL_TEST_POSTGRES',
                              'postgresql://postgres@127.0.0.1:5432/test')
MYSQL_URL = os.environ.get('PLAYHOUSE_POOL_TEST_MYSQL',
                           'mysql://root@127.0.0.1:3306/test')
# A statement that runs about a second in SQLite itself.
SQLITE_SLOW = ('WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 '
               'FROM c WHERE x < 3000000) SELECT count(*) FROM c')


def _kwargs(url):
    parsed = urlparse(url)
    return {'host': parsed.hostname, 'port': parsed.port,
            'user': parsed.username, 'password': parsed.password or '',
            'database': parsed.path.lstrip('/')}


def ms(since):
    return '%.1f ms' % ((time.perf_counter() - since) * 1e3)


async def cancelled(coro, after):
    """Run ``coro`` as a task; cancel it ``after`` seconds in (None: at
    its first suspension, in the same loop iteration it started)."""
    task = asyncio.ensure_future(coro)
    if after is None:
        asyncio.get_running_loop().call_soon(task.cancel)
    else:
        await asyncio.sleep(after)
        task.cancel()
    try:
        await task
        return 'completed'
    except asyncio.CancelledError:
        return 'cancelled'


# -- asyncpg -----------------------------------------------------------------

async def postgres():
    import asyncpg
    kw = _kwargs(POSTGRES_URL)
    admin = await asyncpg.connect(**kw)
    conn = await asyncpg.connect(**kw)
    proto = conn._protocol

    def state():
        return ('is_closed=%s cancelling=%s in_transaction=%s'
                % (conn.is_closed(), proto._is_cancelling(),
                   conn.is_in_transaction()))

    print('asyncpg %s' % asyncpg.__version__)
    print('fresh:', state())
    print('1. SELECT pg_sleep(1) cancelled after 50 ms:',
          await cancelled(conn.fetchval('SELECT pg_sleep(1)'), 0.05))
    print('   then:', state())
    start = time.perf_counter()
    print('   next query ->', await conn.fetchval('SELECT 1'), 'after',
          ms(start), '(it waited for the cancel request to be answered)')
    print('2. SELECT 1 cancelled at its first await:',
          await cancelled(conn.fetchval('SELECT 1'), None))
    print('   then:', state())
    start = time.perf_counter()
    waited = await proto._wait_for_cancellation(5.0)
    print('   _wait_for_cancellation() took', ms(start), '(budget left %.2f)'
          % waited)
    tr = conn.transaction()
    await tr.start()
    print('3. inside a transaction, pg_sleep cancelled:',
          await cancelled(conn.fetchval('SELECT pg_sleep(1)'), 0.05))
    await proto._wait_for_cancellation(5.0)
    print('   then:', state(), 'top_xact=%r' % conn._top_xact)
    await tr.rollback()
    print('4. terminated by the server while idle:')
    await admin.execute('SELECT pg_terminate_backend($1)',
                        conn.get_server_pid())
    time.sleep(0.1)         # the loop does not run: nothing is read
    print('   before the loop runs again:', 'is_closed=%s' % conn.is_closed())
    await asyncio.sleep(0)
    print('   after one sleep(0):', 'is_closed=%s' % conn.is_closed())
    await asyncio.sleep(0.005)
    print('   after the loop polled:', 'is_closed=%s' % conn.is_closed(),
          'transport closing=%s' % conn._transport.is_closing())
    await admin.close()


# -- aiomysql ----------------------------------------------------------------

async def mysql():
    import aiomysql
    import pymysql
    kw = _kwargs(MYSQL_URL)
    kw['db'] = kw.pop('database')
    kw['port'] = kw['port'] or 3306
    admin = pymysql.connect(autocommit=True, **{
        k: v for k, v in kw.items() if k != 'db'})

    def state(conn):
        reader = conn._reader
        return ('closed=%s reader_eof=%s buffered=%s'
                % (conn.closed, reader.at_eof() if reader else None,
                   len(reader._buffer) if reader else None))

    print('aiomysql %s' % aiomysql.__version__)
    conn = await aiomysql.connect(autocommit=True, **kw)
    print('fresh:', state(conn))
    print('1. SELECT SLEEP(1) cancelled after 50 ms:',
          await cancelled(conn.query('SELECT SLEEP(1)'), 0.05))
    print('   then:', state(conn), 'close reason=%r' % conn._close_reason)
    try:
        await conn.query('SELECT 1')
    except Exception as exc:
        print('   next query raised %s: %s' % (type(exc).__name__, exc))
    conn = await aiomysql.connect(autocommit=True, **kw)
    cur = await conn.cursor()
    print('2. SELECT 1 cancelled at its first await:',
          await cancelled(cur.execute('SELECT 1'), None))
    print('   then:', state(conn))
    conn = await aiomysql.connect(autocommit=True, **kw)
    await conn.begin()
    print('3. inside a transaction, SLEEP cancelled:',
          await cancelled(conn.query('SELECT SLEEP(1)'), 0.05))
    print('   then:', state(conn), 'in transaction (last status)=%s'
          % conn.get_transaction_status())
    conn = await aiomysql.connect(autocommit=True, **kw)
    print('4. KILLed by the server while idle:')
    admin.cursor().execute('KILL %d' % conn.thread_id())
    await asyncio.sleep(0.05)
    print('   then:', state(conn))
    try:
        await conn.ping(reconnect=False)
    except Exception as exc:
        print('   ping raised %s: %s' % (type(exc).__name__, exc))
    admin.close()


# -- aiosqlite ---------------------------------------------------------------

async def sqlite():
    import threading

    import aiosqlite
    path = os.path.join(tempfile.mkdtemp(), 'notes.db')
    conn = await aiosqlite.connect(path, isolation_level=None)

    def state():
        return ('_running=%s _connection=%s thread alive=%s in_transaction=%s'
                % (conn._running, conn._connection is not None,
                   conn._thread.is_alive(), conn.in_transaction))

    print('aiosqlite %s' % aiosqlite.__version__)
    print('1. a 1 s statement cancelled after 50 ms:',
          await cancelled(conn.execute(SQLITE_SLOW), 0.05))
    print('   then:', state())
    start = time.perf_counter()
    await conn.execute('SELECT 1')
    print('   next query answered after', ms(start),
          '(the cancelled one ran on in the thread)')
    print('2. the same, then interrupt():',
          await cancelled(conn.execute(SQLITE_SLOW), 0.05))
    await conn.interrupt()
    for _ in range(2):
        start = time.perf_counter()
        try:
            await conn.execute('SELECT 1')
            print('   next query answered after', ms(start))
        except Exception as exc:
            print('   next query raised %s: %s after %s (the interrupt '
                  'outlived the statement it was meant for)'
                  % (type(exc).__name__, exc, ms(start)))
    # Why: sqlite3_interrupt() holds until no statement of the connection
    # is active, and aiosqlite's worker keeps the last result (a cursor
    # with its statement stepped, unfetched) referenced until its next call.
    await conn.close()              # the one way back to a clean state
    conn = await aiosqlite.connect(path, isolation_level=None)
    await conn.execute('CREATE TABLE t (x)')
    print('3. INSERT cancelled at its first await:',
          await cancelled(conn.execute('INSERT INTO t VALUES (1)'), None))
    await asyncio.sleep(0.05)
    rows = await (await conn.execute('SELECT count(*) FROM t')).fetchall()
    print('   rows in t afterwards: %d (it ran all the same)' % rows[0][0])
    await conn.execute('BEGIN')
    print('4. inside a transaction, cancelled:',
          await cancelled(conn.execute(SQLITE_SLOW), 0.05))
    print('   then:', state())
    await conn.interrupt()
    await conn.rollback()
    thread = conn._thread
    await conn.close()
    print('5. closed: thread alive=%s daemon=%s name=%r' % (
        thread.is_alive(), thread.daemon, thread.name))
    print('   worker threads alive:', sum(
        '_connection_worker_thread' in t.name for t in threading.enumerate()))


# -- pwasyncio's traps -------------------------------------------------------

async def _use(db):
    async with db:
        return (await db.aexecute_sql('SELECT 1')).fetchone()


def pwasyncio_loops():
    """A database used from a second event loop (pytest's loop per test)."""
    from playhouse import pwasyncio
    pg, my = _kwargs(POSTGRES_URL), _kwargs(MYSQL_URL)
    pg.pop('password')
    my.pop('password')
    my['port'] = my['port'] or 3306
    dbs = {'postgres': lambda: pwasyncio.AsyncPostgresqlDatabase(
               pg.pop('database'), acquire_timeout=3, **pg),
           'mysql': lambda: pwasyncio.AsyncMySQLDatabase(
               my.pop('database'), acquire_timeout=3, **my),
           'sqlite': lambda: pwasyncio.AsyncSqliteDatabase(
               os.path.join(tempfile.mkdtemp(), 'loops.db'),
               acquire_timeout=3)}
    print('pwasyncio: one database, two event loops (asyncio.run twice)')
    for name, make in dbs.items():
        db = make()
        asyncio.run(_use(db))
        try:
            asyncio.run(asyncio.wait_for(_use(db), 5))
            print('  %s: second loop worked' % name)
        except BaseException as exc:
            print('  %s: second loop raised %s: %s'
                  % (name, type(exc).__name__, str(exc)[:100]))


async def pwasyncio_double_release():
    """aconnect()'s stale path: release, then a cancelled reacquire."""
    from playhouse import pwasyncio
    my = _kwargs(MYSQL_URL)
    my.pop('password')
    db = pwasyncio.AsyncMySQLDatabase(my.pop('database'), pool_size=1,
                                      pool_min_size=1, **my)
    print('pwasyncio: aconnect() finds the task\'s connection stale, '
          'releases it, is cancelled reacquiring')

    async def request():
        await db.aconnect()
        victim = db._state.conn
        victim.conn.close()         # as aiomysql does on a cancelled query
        try:
            await db.aconnect()
        except asyncio.CancelledError:
            print('  state still holds the released connection:',
                  db._state.conn is victim)
            try:
                await db.aclose()
                print('  aclose() released it again')
            except BaseException as exc:
                print('  aclose() raised %s' % type(exc).__name__)
            raise

    task = asyncio.ensure_future(request())
    # db._pool is set once the pool's first fill is done: the first
    # connect under way seen here is the reacquire's.
    while db._pool is None or not db._pool._acquiring:
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await db.close_pool()


async def pwasyncio_mysql_stall():
    """A waiter behind a connection whose query is cancelled (aiomysql
    closes it; its pool frees the slot and wakes nobody)."""
    from playhouse import pwasyncio
    my = _kwargs(MYSQL_URL)
    my.pop('password')
    db = pwasyncio.AsyncMySQLDatabase(my.pop('database'), pool_size=1,
                                      pool_min_size=1, acquire_timeout=3,
                                      **my)
    holding = asyncio.Event()

    async def holder():
        async with db:
            holding.set()
            await db.aexecute_sql('SELECT SLEEP(1)')

    async def waiter():
        await holding.wait()
        start = time.perf_counter()
        try:
            async with db:
                await db.aexecute_sql('SELECT 1')
            print('  the waiter was served after', ms(start))
        except Exception as exc:
            print('  the waiter failed after %s: %s' % (ms(start), exc))

    print('pwasyncio on aiomysql, pool_size=1: the holder\'s query is '
          'cancelled while another task waits')
    hold, wait = asyncio.ensure_future(holder()), asyncio.ensure_future(
        waiter())
    await holding.wait()
    await asyncio.sleep(0.1)
    hold.cancel()
    await asyncio.gather(hold, wait, return_exceptions=True)
    print('  aiomysql pool meanwhile: size %d, free %d, used %d'
          % (db._pool.size, db._pool.freesize, len(db._pool._used)))
    await db.close_pool()


async def waitfor():
    """asyncio.wait_for when the awaited completes in the same iteration
    as the cancel of the task awaiting it."""
    queue: asyncio.Queue = asyncio.Queue()
    outcome = {'swallowed': 0, 'cancelled, item kept': 0,
               'cancelled, item lost': 0}
    for _ in range(100):
        async def taker():
            return await asyncio.wait_for(queue.get(), 10)
        task = asyncio.ensure_future(taker())
        await asyncio.sleep(0)          # the taker waits in get()
        queue.put_nowait(object())      # wakes it ...
        task.cancel()                   # ... and cancels it, same iteration
        try:
            await task
            outcome['swallowed'] += 1
        except asyncio.CancelledError:
            outcome['cancelled, item kept' if queue.qsize()
                    else 'cancelled, item lost'] += 1
        while queue.qsize():
            queue.get_nowait()
    print('Python %s, asyncio.wait_for(queue.get()) cancelled as it is '
          'served: %s' % (sys.version.split()[0], outcome))


def main(which):
    if which in ('all', 'postgres'):
        asyncio.run(postgres())
    if which in ('all', 'mysql'):
        asyncio.run(mysql())
    if which in ('all', 'sqlite'):
        asyncio.run(sqlite())
    if which in ('all', 'pwasyncio'):
        pwasyncio_loops()
        asyncio.run(pwasyncio_double_release())
        asyncio.run(pwasyncio_mysql_stall())
    if which in ('all', 'waitfor'):
        asyncio.run(waitfor())


if __name__ == '__main__':
    main(sys.argv[1] if len(sys.argv) > 1 else 'all')
