"""Real faults: killed backends, forks, shutdown while busy."""
import gc
import json
import os
import signal
import sys
import threading

import peewee
import pytest

import playhouse_pool as pp
from conftest import (DATABASE_ERRORS, Psycopg2Backend, held_elsewhere,
                      run_threads, settled, wait_until)
from test_housekeeping import open_idle


def test_every_connection_killed_next_checkouts_just_work(server_backend):
    db = server_backend.make_db(max_connections=4, timeout=10)
    open_idle(db, 4)
    victims = server_backend.server_ids()
    assert len(victims) == 4
    for conn_id in victims:
        server_backend.kill(conn_id)

    barrier = threading.Barrier(4)

    def request(_):
        with db.connection_context():
            barrier.wait()            # four checkouts at once
            return db.execute_sql('SELECT 1').fetchone()[0]

    assert run_threads(4, request) == [1, 1, 1, 1]
    assert server_backend.server_ids().isdisjoint(victims)
    stats = db.pool_stats()
    assert (stats['open'], stats['created'], stats['closed']) == (4, 8, 4)


def test_query_in_flight_fails_and_its_connection_is_discarded(server_backend):
    db = server_backend.make_db(max_connections=2)
    sleep = ('SELECT pg_sleep(30)' if server_backend.server == 'postgres'
             else 'SELECT SLEEP(30)')
    started = threading.Event()
    outcome = []

    def long_query(_):
        db.connect()
        outcome.append(server_backend.conn_id(db))
        started.set()
        try:
            db.execute_sql(sleep)
        except DATABASE_ERRORS as exc:          # the driver's error
            outcome.append(exc)
        db.close()

    t = threading.Thread(target=long_query, args=(0,))
    t.start()
    started.wait(10)
    server_backend.kill(outcome[0])
    t.join(30)
    assert isinstance(outcome[1], DATABASE_ERRORS)
    settled(db)                        # a worker closed it, opened another
    stats = db.pool_stats()
    assert (stats['open'], stats['closed'], stats['created']) == (1, 1, 2)
    assert outcome[0] not in server_backend.server_ids()
    db.connect()
    assert db.execute_sql('SELECT 1').fetchone()[0] == 1
    db.close()


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='needs os.fork')
def test_forked_child_starts_empty_and_spares_the_parent(server_backend):
    db = server_backend.make_db(max_connections=4)
    open_idle(db, 2)
    db.connect()                           # one held, one idle
    parent_ids = {server_backend.conn_id(db)} | server_backend.server_ids()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:                                  # the child
        try:
            report = {'closed': db.is_closed(), 'stats': db.pool_stats()}
            db.connect()
            report['child_id'] = server_backend.conn_id(db)
            db.close()
            db.close_all()
            gc.collect()
            os.write(write_end, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    report = json.loads(os.read(read_end, 65536).decode())
    os.close(read_end)
    assert status == 0
    assert report['closed'] is True
    assert report['stats']['open'] == 0
    assert report['child_id'] not in parent_ids
    # The parent's held and idle connections still work.
    assert db.execute_sql('SELECT 1').fetchone()[0] == 1

    def use_idle(_):
        with db.connection_context():
            return server_backend.conn_id(db)

    assert run_threads(1, use_idle)[0] in parent_ids
    assert parent_ids <= server_backend.server_ids()
    db.close()


def in_child(report, write_end):
    """In a forked child: send ``report`` to the parent and exit, whatever
    happens (the child is a copy of the test run)."""
    try:
        os.write(write_end, json.dumps(report).encode())
    finally:
        os._exit(0)


def from_child(pid, read_end, write_end):
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    report = json.loads(os.read(read_end, 65536).decode())
    os.close(read_end)
    assert status == 0
    return report


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='needs os.fork')
def test_a_child_forked_inside_blocks_unwinds_them_on_its_own_connection(
        server_backend):
    db = server_backend.make_db(max_connections=4)
    read_end, write_end = os.pipe()
    report = {}
    pid = -1
    try:
        with db.connection_context():
            outer = server_backend.conn_id(db)
            with db.execution_context(with_transaction=False):
                inner = server_backend.conn_id(db)
                pid = os.fork()
            if pid == 0:
                # The connection set aside was the parent's: the child's
                # next query opens a connection of its own.
                report['after_inner'] = server_backend.conn_id(db)
        if pid == 0:
            report['closed'] = db.is_closed()
    except BaseException as exc:
        if pid != 0:
            raise
        report['error'] = repr(exc)
    if pid == 0:
        in_child(report, write_end)
    report = from_child(pid, read_end, write_end)
    assert 'error' not in report
    assert report['after_inner'] not in (outer, inner)
    assert report['closed'] is True
    # The parent's connections were spared.
    assert {outer, inner} <= server_backend.server_ids()


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='needs os.fork')
@pytest.mark.parametrize('inside', ['atomic', 'execution_context'])
def test_a_child_forked_inside_atomic_runs_transactions_of_its_own(
        server_backend, inside):
    """As a multiprocessing worker forked by a thread inside atomic() does
    (or inside an execution_context() in one, which the child then leaves):
    the parent's transactions are not the child's, its own queries and
    atomic() blocks run on a connection of its own."""
    db = server_backend.make_db(max_connections=4)
    read_end, write_end = os.pipe()
    report = {}
    pid = -1
    with db.atomic():
        parent = server_backend.conn_id(db)
        try:
            if inside == 'atomic':
                pid = os.fork()
            else:
                with db.execution_context():
                    pid = os.fork()
        except BaseException as exc:         # the child must not go on
            if pid != 0:
                raise
            report['error'] = repr(exc)
        if pid == 0:
            try:
                report['depth'] = db.transaction_depth()
                with db.atomic():
                    report['own'] = server_backend.conn_id(db)
                    report['inner_depth'] = db.transaction_depth()
            except BaseException as exc:
                report['error'] = repr(exc)
            in_child(report, write_end)      # a worker exits, never unwinds
    report = from_child(pid, read_end, write_end)
    assert 'error' not in report
    assert (report['depth'], report['inner_depth']) == (0, 1)
    assert report['own'] != parent


def test_a_block_whose_connection_close_all_took_goes_on_on_a_new_one(
        backend):
    db = backend.make_db()
    with db.connection_context():
        db.execute_sql('SELECT 1')
        db.close_all()
        assert db.execute_sql('SELECT 2').fetchone()[0] == 2
    assert db.is_closed()
    stats = db.pool_stats()
    assert (stats['in_use'], stats['idle']) == (0, 1)


def test_a_transaction_whose_connection_close_all_took_fails_loudly(backend):
    """Its statements must not go on in autocommit on a new connection."""
    db = backend.make_db()
    refused = []
    # The block's end fails too, as peewee has it: InterfaceError, or on
    # peewee 3's SQLite an AttributeError (its rollback() reads conn None).
    with pytest.raises((peewee.InterfaceError, AttributeError)):
        with db.atomic():
            db.execute_sql('SELECT 1')
            db.close_all()
            try:
                db.execute_sql('SELECT 2')
            except peewee.InterfaceError as exc:
                refused.append(str(exc))
                raise
    assert refused and 'lost its connection' in refused[0]
    assert db.is_closed() and db.transaction_depth() == 0
    assert db.pool_stats()['in_use'] == 0
    with db.atomic():                    # and the thread goes on
        assert db.execute_sql('SELECT 3').fetchone()[0] == 3


def test_close_all_with_timeout_returns_once_close_stale_took_the_rest(
        backend):
    db = backend.make_db(max_connections=2)
    closed = []
    with held_elsewhere(db):
        closer = threading.Thread(target=lambda: closed.append(
            db.close_all(timeout=60)))
        closer.start()
        wait_until(lambda: db._ledger.draining,
                   what='close_all to start draining')
        assert db.close_stale(0) == 1    # nothing is checked out now
        closer.join(10)
    assert closed == [0]                 # returned without waiting 60 s


def test_close_all_with_timeout_drains_then_closes(backend):
    db = backend.make_db(max_connections=2, timeout=5)
    holding = threading.Event()
    give_back = threading.Event()

    def busy(_):
        db.connect()
        holding.set()
        give_back.wait(10)
        db.close()

    worker = threading.Thread(target=busy, args=(0,))
    worker.start()
    holding.wait(10)
    closed = []
    closer = threading.Thread(target=lambda: closed.append(
        db.close_all(timeout=30)))
    closer.start()
    wait_until(lambda: db._ledger.draining, what='close_all to start draining')

    with pytest.raises(pp.PoolClosedError, match='shutting down'):
        run_threads(1, lambda _: db.connect())
    give_back.set()
    worker.join(10)
    closer.join(10)
    assert closed == [1]
    assert db.pool_stats()['open'] == 0
    db.connect()                             # usable again
    db.close()


def test_close_all_timeout_closes_what_did_not_come_back(backend):
    db = backend.make_db(max_connections=2)
    holding = threading.Event()
    release = threading.Event()
    held = []

    def stubborn(_):
        db.connect()
        held.append(db.connection())
        holding.set()
        release.wait(10)
        return db.close()            # the pool closed it: nothing to return

    worker = threading.Thread(target=stubborn, args=(0,))
    worker.start()
    holding.wait(10)
    assert db.close_all(timeout=0.05) == 1
    assert db._is_closed(held[0])
    release.set()
    worker.join(10)
    stats = db.pool_stats()
    assert (stats['open'], stats['closed']) == (0, 1)
    assert db._ledger.closed_keys == {}
    assert db.close_all() == 0                # idempotent


def busy(db, stop, unexpected):
    """A thread's requests until ``stop``: shutdown refusals and driver
    errors (a connection closed under a query) are expected, anything else
    goes to ``unexpected``."""
    while not stop.is_set():
        try:
            with db.connection_context():
                db.execute_sql('SELECT 1')
        except (pp.PoolClosedError,) + DATABASE_ERRORS:
            pass
        except Exception as exc:
            unexpected.append(exc)
            return


def test_close_all_from_another_thread_while_busy(backend):
    db = backend.make_db(max_connections=3, timeout=10)
    stop = threading.Event()
    errors = []
    threads = [threading.Thread(target=busy, args=(db, stop, errors))
               for _ in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: db.pool_stats()['checkouts'] > 50, what='traffic')
    for _ in range(5):
        db.close_all(timeout=1)
    stop.set()
    for t in threads:
        t.join(10)
    assert errors == []
    settled(db)
    stats = db.pool_stats()
    assert stats['in_use'] == 0 and db._reserved == 0
    assert stats['open'] == stats['idle'] <= 3


@pytest.mark.skipif(not hasattr(signal, 'SIGUSR1'), reason='needs SIGUSR1')
def test_close_all_from_a_signal_handler_interrupting_pool_work(backend):
    """A handler runs in the main thread between any two bytecodes, possibly
    inside the pool's own bookkeeping or a query: it must not deadlock, and
    the counts must stay exact. The main thread's own connection is closed
    under it; the one request it interrupts may fail with whatever its
    driver raises for that (pymysql: even an AttributeError)."""
    db = backend.make_db(max_connections=3, timeout=10)
    closed = []
    stop = threading.Event()

    def handler(signum, frame):
        closed.append(db.close_all(timeout=5))

    def send_signal():
        wait_until(lambda: db.pool_stats()['checkouts'] > 200,
                   what='traffic')
        os.kill(os.getpid(), signal.SIGUSR1)

    interrupted = []
    unexpected = []
    previous = signal.signal(signal.SIGUSR1, handler)
    helpers = [threading.Thread(target=busy, args=(db, stop, unexpected))
               for _ in range(2)]
    helpers.append(threading.Thread(target=send_signal))
    try:
        for t in helpers:
            t.start()
        for _ in range(100_000):               # the main thread works too
            if closed:
                break
            try:
                with db.connection_context():
                    db.execute_sql('SELECT 1')
            except pp.PoolClosedError:
                pass
            except Exception as exc:       # closed under the query
                interrupted.append(exc)
    finally:
        stop.set()
        for t in helpers:
            t.join(10)
        signal.signal(signal.SIGUSR1, previous)
    assert closed, 'the handler did not run'
    assert len(interrupted) <= 1, interrupted
    assert unexpected == []
    settled(db)
    stats = db.pool_stats()
    assert stats['in_use'] == 0 and db._reserved == 0
    assert stats['open'] == stats['idle'] == stats['created'] - stats['closed']
    with db.connection_context():
        assert db.execute_sql('SELECT 1').fetchone()[0] == 1


class _Interrupt(BaseException):
    pass


@pytest.mark.skipif(
    sys.version_info < (3, 10),
    reason="CPython 3.9's own 'with' can lose __exit__ to a signal "
           "(bpo-29988)")
def test_an_exception_from_a_signal_handler_never_leaves_the_pool_lock_held(
        tmp_path):
    """A handler that raises (KeyboardInterrupt, a timeout) can land between
    any two bytecodes of connect() and close(): whatever it interrupts, the
    pool's lock must not stay held, or every other thread hangs on it."""
    db = pp.PooledSqliteDatabase(str(tmp_path / 'signals.db'),
                                 max_connections=None)
    armed = [False]

    def in_threading(frame):
        while frame is not None:
            if frame.f_code.co_filename == threading.__file__:
                return True
            frame = frame.f_back
        return False

    looking = [False]

    def handler(signum, frame):
        # Not inside CPython's threading module (Thread.start(), when the
        # pool starts a worker): it is not safe against exceptions landing
        # anywhere itself, and a broken one hangs every later test. (A tick
        # during the look returns at once: no handlers piling up.)
        if not armed[0] or looking[0]:
            return
        looking[0] = True
        try:
            inside = in_threading(frame)
        finally:
            looking[0] = False
        if not inside:
            armed[0] = False
            raise _Interrupt

    # The profiling timer (CPU time, SIGPROF): pytest-timeout has the real
    # one and SIGALRM.
    previous = signal.signal(signal.SIGPROF, handler)
    signal.setitimer(signal.ITIMER_PROF, 3e-5, 3e-5)
    interrupts = held = 0
    try:
        for _ in range(400_000):           # or until enough interrupts
            if interrupts >= 300:
                break
            try:
                armed[0] = True
                db.connect(reuse_if_open=True)
                db.close()
                armed[0] = False
            except _Interrupt:
                interrupts += 1
                if db._pool_lock._is_owned():
                    held += 1
                    while db._pool_lock._is_owned():
                        db._pool_lock.release()
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
    assert interrupts > 100, 'the timer hardly interrupted anything'
    assert held == 0, '%d of %d interrupts left the lock held' % (
        held, interrupts)


@pytest.mark.parametrize('server_backend', [Psycopg2Backend], indirect=True)
def test_a_proxied_psycopg2_connection_is_reused(server_backend):
    """Tracing libraries hand out proxies of the driver's connection (wrapt's
    ObjectProxy): the pool must read them through their attributes, not
    their class, and keep reusing them."""

    class Proxy:
        def __init__(self, conn):
            object.__setattr__(self, '_wrapped', conn)

        def __getattr__(self, name):
            return getattr(self._wrapped, name)

        def __setattr__(self, name, value):
            setattr(self._wrapped, name, value)

    class Traced(server_backend.db_class):
        def _connect(self):
            return Proxy(super()._connect())

    server_backend.db_class = Traced
    db = server_backend.make_db(max_connections=2)
    for _ in range(3):
        db.connect()
        assert db.execute_sql('SELECT 1').fetchone()[0] == 1
        db.close()
    stats = db.pool_stats()
    assert (stats['created'], stats['closed'], stats['idle']) == (1, 0, 1)
