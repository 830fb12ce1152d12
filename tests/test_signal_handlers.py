"""close_all() from a signal handler, made to interrupt the pool's code,
then a driver's in the middle of a statement, at each line they run in
turn: no deadlock, exact counts, and no connection closed under its
driver."""
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
                      MySQLConnectorBackend, MySQLdbBackend, Psycopg2Backend,
                      Psycopg3Backend, settled, wait_until)

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


def requests(db: Any, failures: Optional[list] = None) -> None:
    """A thread's first requests: the first checkout starts the workers
    and waits for a connect; the next ones take idle connections, one on a
    connection of its own (execution_context). With ``failures``, each
    request that fails as an interrupted one may (its waiter failed, or
    its connection was closed under it) goes there, and the next runs."""
    blocks = [db.connection_context, db.connection_context,
              db.execution_context]
    for block in blocks:
        try:
            with block():
                db.execute_sql('SELECT 1').fetchone()
        except (pp.PoolClosedError, peewee.DatabaseError,
                peewee.InterfaceError, sqlite3.Error) as exc:
            if failures is None:
                raise
            failures.append(exc)


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
            requests(db, failures)
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
    # lock held in submit(), the start lock held in start().
    assert {name for name, _ in places} >= {
        'pool.py', 'lending.py', 'ledger.py', 'waiting.py', 'workers.py'}


def closing_after() -> None:
    """Wait for the thread that closes the pool once the bookkeeping the
    handler interrupted is done (close_all() returned 0 at once)."""
    for thread in threading.enumerate():
        if thread.name == 'playhouse_pool-close_all':
            thread.join(10)
            assert not thread.is_alive()


# Every server driver: psycopg 3 and the MySQL drivers run part of each
# statement in Python; psycopg2 calls a Python codec mid-statement (column
# names), holding its connection's lock.
DRIVERS = [Psycopg2Backend, Psycopg3Backend, MySQLBackend, MySQLdbBackend,
           MySQLConnectorBackend, MariaDBConnectorBackend]


@pytest.mark.server
@pytest.mark.parametrize('backend', DRIVERS, indirect=True,
                         ids=[b.name for b in DRIVERS])
def test_close_all_in_a_handler_mid_statement_closes_that_connection_after(
        backend, on_sigusr1):
    """The handler interrupts the driver at each line of Python it runs for
    a statement, one line per round. Closing the connection there, under
    the driver, crashes psycopg 3 and deadlocks psycopg2: the statement
    finishes on it, and the pool closes it as it comes back."""
    db = backend.make_db(max_connections=2, timeout=10)
    seen = {}

    def handler(signum: int, frame: Any) -> None:
        seen['closed'] = db.close_all(timeout=0)
        seen['open'] = not db._is_closed(db.connection())

    on_sigusr1(handler)
    with db.connection_context():
        package = type(db.connection()).__module__.partition('.')[0]
        db.execute_sql('SELECT 1')      # the driver's caches warm (psycopg)

    def in_the_driver(frame: Any) -> bool:
        name = frame.f_globals.get('__name__') or ''
        return name.partition('.')[0] in (package, 'encodings')

    def statement(n: float) -> SignalAtLine:
        # On a new connection each time, as the rounds' (the pool closes
        # each as it comes back): the driver runs the same lines.
        with db.connection_context():
            own_id = backend.conn_id(db)
            with SignalAtLine(n, in_the_driver) as trap:
                row = db.execute_sql('SELECT 1').fetchone()
            assert row[0] == 1, n                 # finished, on its own
        settled(db)
        if trap.fired_at is not None:
            wait_until(lambda: own_id not in backend.server_ids(),
                       what='the connection to be closed as it came back')
        return trap

    db.close_all()
    counting = statement(float('inf'))
    db.close_all()
    assert counting.count > 0
    for n in range(1, counting.count + 1):
        seen.clear()
        trap = statement(n)
        where = (trap.fired_at, n, counting.count)
        assert trap.fired_at is not None, where
        assert seen == {'closed': 0, 'open': True}, where
    stats = db.pool_stats()
    assert stats['open'] == stats['in_use'] == 0, stats
    assert stats['created'] == stats['closed'] == counting.count + 2, stats


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
