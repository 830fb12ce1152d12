"""close_all() from a signal handler, made to interrupt the pool's code at
each line it runs in turn, and a driver in the middle of a statement: no
deadlock, exact counts, and no connection closed under its driver."""
import os
import signal
import sqlite3
import sys
import threading
from typing import Any, Optional, Tuple

import peewee
import pytest

import playhouse_pool as pp
from conftest import (MariaDBConnectorBackend, MySQLBackend,
                      MySQLConnectorBackend, MySQLdbBackend, Psycopg3Backend,
                      settled, wait_until)

PACKAGE_DIR = os.path.dirname(os.path.abspath(pp.__file__)) + os.sep


class SignalAtLine:
    """Within the block, raise SIGUSR1 in this thread at the ``n``-th line
    run (``sys.settrace``: this thread only) by code that ``chosen(frame)``
    picks; the handler runs there, as a real signal's would. ``count`` says
    how many such lines the block ran, ``fired_at`` where it fired."""

    def __init__(self, n: float, chosen: Any) -> None:
        self.n = n
        self.chosen = chosen
        self.count = 0
        self.fired_at: Optional[Tuple[str, int]] = None

    def __enter__(self) -> 'SignalAtLine':
        sys.settrace(self._call)
        return self

    def __exit__(self, *exc: Any) -> None:
        sys.settrace(None)

    def _call(self, frame: Any, event: str, arg: Any) -> Any:
        return self._line if self.chosen(frame) else None

    def _line(self, frame: Any, event: str, arg: Any) -> Any:
        if event == 'line':
            self.count += 1
            if self.count == self.n:
                self.fired_at = (os.path.basename(frame.f_code.co_filename),
                                 frame.f_lineno)
                signal.raise_signal(signal.SIGUSR1)
        return self._line


def in_the_pool(frame: Any) -> bool:
    return frame.f_code.co_filename.startswith(PACKAGE_DIR)


def requests(db: Any) -> None:
    """A thread's first requests: the first checkout starts the workers
    and waits for a connect; the next ones take idle connections, one on a
    connection of its own (execution_context)."""
    for _ in range(2):
        with db.connection_context():
            db.execute_sql('SELECT 1').fetchone()
    with db.execution_context():
        db.execute_sql('SELECT 1').fetchone()


@pytest.fixture
def on_sigusr1():
    """Install a SIGUSR1 handler for the test; the previous one after."""
    previous = signal.getsignal(signal.SIGUSR1)
    yield lambda handler: signal.signal(signal.SIGUSR1, handler)
    signal.signal(signal.SIGUSR1, previous)


def test_close_all_in_a_handler_at_any_line_of_a_request_never_deadlocks(
        tmp_path, on_sigusr1):
    """The handler interrupts the pool at each of the lines a thread's
    first requests run, one line per round (the workers and the start lock
    held, the ledger's lock held, a waiter queued, a check-in half done):
    close_all() returns, at most the interrupted request fails, and the
    pool's counts are exact and it serves again."""
    path = str(tmp_path / 'signals.db')
    current: list = []
    closed: list = []
    on_sigusr1(lambda signum, frame: closed.append(
        current[0].close_all(timeout=5)))

    def new_pool() -> Any:
        db = pp.PooledSqliteDatabase(path, max_connections=2, timeout=10)
        current[:] = [db]
        return db

    db = new_pool()
    with SignalAtLine(float('inf'), in_the_pool) as counting:
        requests(db)
    db.close_all()
    lines = counting.count
    assert lines > 100, lines

    places = set()
    for n in range(1, lines + 1):
        db = new_pool()
        del closed[:]
        failures = []
        with SignalAtLine(n, in_the_pool) as trap:
            try:
                requests(db)
            except (pp.PoolClosedError, peewee.DatabaseError,
                    peewee.InterfaceError, sqlite3.Error) as exc:
                # The one request the handler interrupted: its waiter
                # failed, or its connection was closed under it.
                failures.append(exc)
        assert trap.fired_at is not None, n
        places.add(trap.fired_at)
        where = 'at %s:%d (line %d of %d)' % (trap.fired_at + (n, lines))
        assert len(closed) == 1, where
        assert len(failures) <= 1, (where, failures)
        closing_after()
        settled(db)
        stats = db.pool_stats()
        assert stats['in_use'] == 0 and db._reserved == 0, (where, stats)
        assert (stats['open'] == stats['idle']
                == stats['created'] - stats['closed']), (where, stats)
        with db.connection_context():
            assert db.execute_sql('SELECT 1').fetchone()[0] == 1, where
        db.close_all()
    # The rounds reached the places that deadlocked once: the workers'
    # lock held in submit(), the start lock held in _start().
    assert {name for name, _ in places} >= {'pool.py', 'ledger.py',
                                            'workers.py', 'records.py'}


def closing_after() -> None:
    """Wait for the thread that closes the pool once the bookkeeping the
    handler interrupted is done (close_all() returned 0 at once)."""
    for thread in threading.enumerate():
        if thread.name == 'playhouse_pool-close_all':
            thread.join(10)
            assert not thread.is_alive()


# Drivers whose statements run Python code of their own, where a signal
# handler can land mid-statement (psycopg2 and sqlite3 run theirs in C).
PYTHON_DRIVERS = [Psycopg3Backend, MySQLBackend, MySQLdbBackend,
                  MySQLConnectorBackend, MariaDBConnectorBackend]


@pytest.mark.server
@pytest.mark.parametrize('backend', PYTHON_DRIVERS, indirect=True,
                         ids=[b.name for b in PYTHON_DRIVERS])
def test_close_all_in_a_handler_mid_statement_closes_that_connection_after(
        backend, on_sigusr1):
    """A handler that interrupted the driver in the middle of this thread's
    statement: closing that connection under the driver can crash the
    process (psycopg 3 does). The statement finishes on it, and the pool
    closes it as it comes back; the other connections go at once."""
    db = backend.make_db(max_connections=3, timeout=10)
    with held_by_another_thread(db) as (other_id, release):
        with db.connection_context():
            own_id = backend.conn_id(db)
            conn = db.connection()
            seen = {}

            def handler(signum: int, frame: Any) -> None:
                seen['closed'] = db.close_all(timeout=0)
                seen['own_open'] = not db._is_closed(conn)

            on_sigusr1(handler)
            package = type(conn).__module__.partition('.')[0]

            def in_the_driver(frame: Any) -> bool:
                return (frame.f_globals.get('__name__') or '').startswith(
                    package + '.')

            # The lines the driver runs for this statement; then the
            # handler lands in the middle of them.
            with SignalAtLine(float('inf'), in_the_driver) as counting:
                db.execute_sql('SELECT 1').fetchone()
            assert counting.count > 2, counting.count
            with SignalAtLine(counting.count // 2, in_the_driver) as trap:
                row = db.execute_sql('SELECT 1').fetchone()
            assert trap.fired_at is not None
            assert row[0] == 1                  # it finished, on its own
            assert seen == {'closed': 1, 'own_open': True}
            wait_until(lambda: other_id not in backend.server_ids(),
                       what="the other thread's connection to be closed")
            assert own_id in backend.server_ids()
            assert db.connection() is conn      # still this thread's
        release()
    settled(db)
    wait_until(lambda: own_id not in backend.server_ids(),
               what='the connection to be closed as it came back')
    stats = db.pool_stats()
    assert (stats['open'], stats['in_use'], stats['created'],
            stats['closed']) == (0, 0, 2, 2)


class held_by_another_thread:
    """For the block, another thread holds a connection of ``db``:
    (its server id, a call that lets the thread check it in and end)."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.ready = threading.Event()
        self.done = threading.Event()
        self.server_id: Any = None
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        try:
            with self.db.connection_context():
                self.server_id = self.db.execute_sql(
                    self._id_sql()).fetchone()[0]
                self.ready.set()
                self.done.wait(30)
        except peewee.DatabaseError:
            pass                # closed under it by close_all: expected
        finally:
            self.ready.set()

    def _id_sql(self) -> str:
        if isinstance(self.db, peewee.PostgresqlDatabase):
            return 'SELECT pg_backend_pid()'
        return 'SELECT CONNECTION_ID()'

    def __enter__(self) -> Tuple[Any, Any]:
        self.thread.start()
        assert self.ready.wait(30)
        return self.server_id, self.done.set

    def __exit__(self, *exc: Any) -> None:
        self.done.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


def test_close_all_does_not_wait_for_the_callers_own_connections(tmp_path):
    """They cannot come back while it waits: its peewee connection and one
    it holds in an execution_context are closed at once, however long
    ``timeout`` is."""
    db = pp.PooledSqliteDatabase(str(tmp_path / 'own.db'), max_connections=3)
    result = []

    def own_thread() -> None:
        db.connect()
        with db.execution_context(with_transaction=False):
            result.append(db.close_all(timeout=600))

    thread = threading.Thread(target=own_thread, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), 'close_all waited for its own connections'
    assert result == [2]
    settled(db)
    stats = db.pool_stats()
    assert (stats['open'], stats['in_use'], stats['closed']) == (0, 0, 2)
