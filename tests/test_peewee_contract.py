"""What peewee's own pool tests (coleifer/peewee, tests/pool.py) ask of a
pool, asked of ours in our own words: the behaviour a user of
``playhouse.pool`` relies on, through the public API and the attributes
peewee documents. (Those of peewee's tests that write the pool's internals
differ by design; the list and the reasons are in CHANGELOG.rst, 0.2.0.)"""
import itertools
import threading
import time

import peewee
import pytest

import playhouse_pool as pp
from conftest import held_elsewhere, run_threads, wait_until


class Counting(peewee.SqliteDatabase):
    """Connections that are numbers 1, 2, 3, ... (peewee's FakeDatabase)."""

    def __init__(self, *args, **kwargs):
        self.opened = itertools.count(1)
        self.closed = []
        super().__init__(*args, **kwargs)

    def _connect(self):
        return next(self.opened)

    def _close(self, conn):
        self.closed.append(conn)


class CountingPool(pp.PooledDatabase, Counting):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.conn_key = lambda conn: conn      # as peewee's test sets it


@pytest.fixture
def db():
    database = CountingPool('counting')
    yield database
    database.close_all()


def test_a_closed_connection_is_reused_by_the_next_connect(db):
    assert db.connection() == 1
    db.close()
    db.connect()
    assert db.connection() == 1
    assert 1 in db._in_use                     # by conn_key


def test_connect_twice_raises_unless_reuse_if_open(db):
    db.connect()
    with pytest.raises(peewee.OperationalError):
        db.connect()
    assert db.connect(reuse_if_open=True) is False
    assert db.connection() == 1


def test_concurrent_threads_each_open_one_then_all_idle(db):
    holding = threading.Barrier(5, timeout=10)

    def hold(_):
        db.connect()
        holding.wait()
        db.close()

    run_threads(5, hold)
    assert sorted(conn for _, _, conn in db._connections) == [1, 2, 3, 4, 5]
    assert db._in_use == {}


def test_max_connections_then_value_error(db):
    release = threading.Event()
    holding = threading.Barrier(db._max_connections + 1, timeout=10)

    def hold(_):
        db.connect()
        holding.wait()
        release.wait(10)
        db.close()

    threads = [threading.Thread(target=hold, args=(i,))
               for i in range(db._max_connections)]
    for thread in threads:
        thread.start()
    holding.wait()
    with pytest.raises(ValueError):            # MaxConnectionsExceeded
        db.connect()
    release.set()
    for thread in threads:
        thread.join(10)


def test_a_stale_connection_is_not_returned_to_the_pool():
    db = CountingPool('counting', stale_timeout=0.001)
    assert db.connection() == 1
    time.sleep(0.002)             # past stale_timeout: the point of the test
    db.close()
    assert len(db._connections) == 0 and db._in_use == {}
    assert db.connection() == 2
    wait_until(lambda: db.closed == [1], what='the stale one to be closed')
    db.close_all()


def test_manual_close_closes_and_the_next_connect_opens_anew(db):
    assert db.connection() == 1
    assert db.manual_close() is True
    assert len(db._connections) == 0 and db._in_use == {}
    assert db.closed == [1]
    assert db.connection() == 2
    db.close()
    assert db.connection() == 2


def test_manual_close_when_nothing_is_open_returns_false(db):
    assert db.manual_close() is False
    db.connect()
    db.close()
    assert db.manual_close() is False


def test_the_database_as_a_context_manager_returns_its_connection(tmp_path):
    db = pp.PooledSqliteDatabase(str(tmp_path / 'ctx.db'))
    with db:
        first = db.connection()
        assert db.in_transaction()
    assert db.is_closed()
    with db:
        assert db.connection() is first
    assert (len(db._connections), len(db._in_use)) == (1, 0)


def test_five_threads_in_context_managers_leave_five_idle(tmp_path):
    db = pp.PooledSqliteDatabase(str(tmp_path / 'ctx.db'))
    inside = threading.Barrier(5, timeout=10)

    def block(_):
        with db:
            inside.wait()

    run_threads(5, block)
    assert (len(db._connections), len(db._in_use)) == (5, 0)
    db.close_all()


def test_an_error_from_the_drivers_close_is_swallowed():
    closed = []

    class FailingClose(CountingPool):
        def _close(self, conn):
            closed.append(conn)
            raise RuntimeError('cannot close')

    db = FailingClose('counting')
    db.connect()
    assert db.manual_close() is True           # no error
    db._close_raw(1337)                        # peewee's name, no error
    assert closed == [1, 1337]
    db.close_all()


def test_a_checkout_waits_for_timeout_then_raises():
    slow = CountingPool('counting', max_connections=1, timeout=0.15)
    with held_elsewhere(slow):
        start = time.monotonic()
        with pytest.raises(pp.MaxConnectionsExceeded):
            slow.connect()
        assert time.monotonic() - start >= 0.15
    slow.close_all()


def test_timeout_zero_means_wait_forever():
    db = CountingPool('counting', max_connections=1, timeout=0)
    assert db._wait_timeout == float('inf')


def test_max_connections_zero_means_unlimited():
    db = CountingPool('counting', max_connections=0)
    holding = threading.Barrier(50, timeout=10)

    def hold(_):
        db.connect()
        holding.wait()
        db.close()

    run_threads(50, hold)
    assert db.pool_stats()['idle'] == 50
    db.close_all()


@pytest.mark.parametrize('call', ['manual_close', 'close_all'])
def test_closing_does_not_hold_the_pool_lock_while_peewees_lock_is_busy(
        call):
    """peewee's regression: a close that waits for the database lock must
    not hold the pool's lock meanwhile (connect() takes them the other way
    round)."""
    db = CountingPool('counting')
    ready, go, done = threading.Event(), threading.Event(), threading.Event()

    def closer():
        db.connect()
        ready.set()
        go.wait(10)
        getattr(db, call)()
        done.set()

    thread = threading.Thread(target=closer)
    thread.start()
    assert ready.wait(10)
    with db._lock:
        go.set()
        got = db._pool_lock.acquire(timeout=5)
        if got:
            db._pool_lock.release()
    thread.join(10)
    assert got and done.is_set()
    db.close_all()


def test_mysql_is_closed_asks_no_round_trip_of_an_unknown_object():
    class NoArgPing:
        def ping(self):
            raise AssertionError('no round trip at checkout')

    db = pp.PooledMySQLDatabase(None)
    assert db._is_closed(NoArgPing()) is False


# -- On real databases -------------------------------------------------------

def test_model_rows_written_before_close_are_read_on_the_reused_connection(
        backend):
    db = backend.make_db()

    class Register(peewee.Model):
        value = peewee.IntegerField()

        class Meta:
            database = db
            table_name = backend.tag + '_register'

    with db.connection_context():
        db.create_tables([Register])
    db.connect()
    for i in range(5):
        Register.create(value=i)
    first = db.connection()
    db.close()
    db.connect()
    for i in range(5, 10):
        Register.create(value=i)
    assert db.connection() is first
    assert [r.value for r in Register.select().order_by(Register.id)] == (
        list(range(10)))
    db.close()


def test_savepoints_inside_a_pooled_block(backend):
    db = backend.make_db()
    name = backend.tag + '_sp'
    with db:
        db.execute_sql('CREATE TABLE %s (x INTEGER)' % name)
    with db:
        db.execute_sql('INSERT INTO %s VALUES (1)' % name)
        with db.atomic() as sp:
            assert isinstance(sp, peewee._savepoint)
            db.execute_sql('INSERT INTO %s VALUES (2)' % name)
            sp.rollback()
        with db.atomic():
            db.execute_sql('INSERT INTO %s VALUES (3)' % name)
    with db:
        rows = db.execute_sql('SELECT x FROM %s ORDER BY x' % name)
        assert [row[0] for row in rows.fetchall()] == [1, 3]


def test_a_failed_statement_leaves_the_pool_usable(backend):
    db = backend.make_db()
    db.connect()
    with pytest.raises(peewee.DatabaseError):
        db.execute_sql('SELECT * FROM no_such_table_here')
    db.close()
    db.connect()
    assert db.execute_sql('SELECT 1').fetchone()[0] == 1
    db.close()


def test_connections_of_four_threads_then_manual_close_each(backend):
    db = backend.make_db()
    inside = threading.Barrier(5, timeout=10)

    def hold(_):
        with db.connection_context():
            with db.atomic():
                db.execute_sql('SELECT 1')
            inside.wait()

    threads = [threading.Thread(target=hold, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    db.connect()
    inside.wait()
    for thread in threads:
        thread.join(10)
    db.close()
    assert (len(db._connections), len(db._in_use)) == (5, 0)
    for left in (4, 3, 2, 1, 0):
        assert db.connect()
        assert db.execute_sql('SELECT 1').fetchone()[0] == 1
        db.manual_close()
        assert len(db._connections) + len(db._in_use) == left
    assert db.is_closed()
