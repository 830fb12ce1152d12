"""Every wait has an end (docs/design.rst, rule 9): when the database host goes
silent (a failover, a dropped route, a firewall that discards packets:
nothing answers and nothing resets), requests fail at their timeout with an
error that says so, the pool's own I/O ends at its deadline without holding
a slot hostage, and the pool recovers by itself when the route returns.

The silence is the proxy's ``hang(True)``: it keeps accepting connections
and delivers no byte either way until ``hang(False)``, as a route that
vanished and came back (TCP's retransmissions then deliver what waited).
"""
import contextlib
import os
import socket
import threading
import time

import peewee
import pytest

import playhouse_pool as pp
import playhouse_pool._options
from conftest import (DATABASE_ERRORS, MySQLBackend, Psycopg2Backend,
                      _backend, run_threads, settled, wait_until)

TIMEOUT = 2.0
# However late the machine runs the pool's threads, a request that times out
# after TIMEOUT ends within this.
SLACK = 1.0


@contextlib.contextmanager
def observed(db):
    """While the block runs, sample the pool every 10 ms: the longest any
    piece of its own I/O (connect, ping, reset, close) ran past its
    deadline, and the most that open and reserved slots together exceeded
    max_connections by (never above 0: rule 7)."""
    seen = {'late': 0.0, 'over': -1}
    stop = threading.Event()
    ledger, limit = db._ledger, db._pool_options.max_connections

    def sample():
        while not stop.wait(0.01):
            late = db._lender.watchdog.lateness(time.monotonic())
            with ledger.lock:
                over = (ledger.open_count() + ledger.slots.closing
                        - limit)
            seen['late'] = max(seen['late'], late)
            seen['over'] = max(seen['over'], over)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        yield seen
    finally:
        stop.set()
        sampler.join()


def four_requests(db):
    """Four threads check out at once and run ``SELECT 1``: what each got
    (1, or the error) and how long it took. Fails if any request thread is
    still alive 5 s after they started."""
    start = threading.Barrier(4)
    results = [None] * 4

    def request(i):
        start.wait()
        began = time.monotonic()
        try:
            with db.connection_context():
                outcome = db.execute_sql('SELECT 1').fetchone()[0]
        except Exception as exc:
            outcome = exc
        results[i] = (outcome, time.monotonic() - began)

    threads = [threading.Thread(target=request, args=(i,), daemon=True)
               for i in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5.0
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0.0))
    assert not any(t.is_alive() for t in threads), \
        'a request is still blocked after 5 s'
    return results


def assert_each_timed_out(results):
    """Each request ended at its timeout (2-3 s) with an error naming it."""
    for outcome, took in results:
        assert isinstance(outcome, (pp.MaxConnectionsExceeded,
                                    peewee.OperationalError)), outcome
        assert 'timeout' in str(outcome), outcome
        assert TIMEOUT - 0.05 <= took <= TIMEOUT + SLACK, (took, outcome)


def assert_served_again(backend, db):
    """The route is back: requests are served with no error, and the
    pool's count of connections is the server's."""
    assert [outcome for outcome, _ in four_requests(db)] == [1] * 4
    settled(db)
    wait_until(lambda: len(backend.server_ids())
               == db.pool_stats()['open'] > 0,
               what="the server's count to match the pool's")


def warm(db, count):
    """``count`` connections opened and checked in."""
    together = threading.Barrier(count)

    def hold(_):
        with db.connection_context():
            together.wait()
    run_threads(count, hold)
    wait_until(lambda: db.pool_stats()['open'] == count,
               what='%d connections open' % count)


def test_a_silent_host_fails_requests_at_their_timeout_on_a_warm_pool(
        proxied):
    backend, proxy, make_db = proxied
    db = make_db(max_connections=3, timeout=TIMEOUT, ping_after=0.5)
    warm(db, 3)
    proxy.hang(True)
    # Idle past ping_after: the keepalive takes all three out, and their
    # pings go unanswered. (Then no request gets a connection whose
    # statement would hang: that is the driver's to bound, see README.)
    wait_until(lambda: len(db._ledger.slots.out) == 3
               and not db._connections,
               what='three keepalive pings under way')
    with observed(db) as seen:
        assert_each_timed_out(four_requests(db))
        # The pings were cut short at their deadline and their connections
        # closed; their slots went to the replacements, whose connects wait
        # for the route.
        wait_until(lambda: db.pool_stats()['closed'] == 3,
                   what='the silent connections to be closed')
    assert seen['late'] < SLACK, 'pool I/O ran %.2fs past its deadline' % (
        seen['late'])
    assert seen['over'] <= 0, 'more slots than max_connections'
    stats = db.pool_stats()
    assert (stats['io_timeouts'], stats['open'], db._reserved) == (3, 0, 3)
    proxy.hang(False)
    assert_served_again(backend, db)


def test_a_connect_that_never_completes_fails_requests_at_their_timeout(
        proxied):
    backend, proxy, make_db = proxied
    db = make_db(max_connections=3, timeout=TIMEOUT)
    proxy.hang(True)                 # an empty pool: every request connects
    with observed(db) as seen:
        assert_each_timed_out(four_requests(db))
        # The connects end too, at the driver's timeout the pool set.
        settled(db)
    assert seen['late'] < SLACK, 'pool I/O ran %.2fs past its deadline' % (
        seen['late'])
    assert seen['over'] <= 0, 'more slots than max_connections'
    assert db.pool_stats()['connect_errors'] >= 3
    proxy.hang(False)
    assert_served_again(backend, db)


def test_a_checkout_ping_that_never_answers_fails_requests_at_their_timeout(
        proxied):
    backend, proxy, make_db = proxied
    # ping_after=0: each checkout pings its connection, on the request's
    # thread.
    db = make_db(max_connections=3, timeout=TIMEOUT, ping_after=0)
    warm(db, 3)
    proxy.hang(True)
    with observed(db) as seen:
        assert_each_timed_out(four_requests(db))
    assert seen['late'] < SLACK, 'pool I/O ran %.2fs past its deadline' % (
        seen['late'])
    assert seen['over'] <= 0, 'more slots than max_connections'
    # Three pings cut short, their connections replaced.
    assert db.pool_stats()['io_timeouts'] == 3
    wait_until(lambda: db.pool_stats()['closed'] == 3,
               what='the silent connections to be closed')
    proxy.hang(False)
    assert_served_again(backend, db)


def test_a_check_in_rollback_to_a_silent_host_ends_at_the_deadline(proxied):
    backend, proxy, make_db = proxied
    db = make_db(max_connections=2, timeout=TIMEOUT)
    db.connect()
    db.execute_sql('BEGIN')          # left open: check-in rolls it back
    proxy.hang(True)
    began = time.monotonic()
    assert db.close() is True
    took = time.monotonic() - began
    assert TIMEOUT - 0.05 <= took <= TIMEOUT + SLACK, took
    # Not reused: closed, and its slot taken by a replacement, whose connect
    # waits for the route.
    wait_until(lambda: db.pool_stats()['closed'] == 1,
               what='the silent connection to be closed')
    stats = db.pool_stats()
    assert (stats['io_timeouts'], stats['open'], db._reserved) == (1, 0, 1)
    proxy.hang(False)
    assert_served_again(backend, db)


def test_without_a_timeout_a_checkout_waits_for_one_connect_attempt(
        proxied, monkeypatch):
    backend, proxy, make_db = proxied
    # The pool's own I/O limit without a timeout, shortened for the test.
    monkeypatch.setattr(playhouse_pool._options, 'IO_SECONDS_MAX', TIMEOUT)
    db = make_db(max_connections=3)
    proxy.hang(True)
    began = time.monotonic()
    with pytest.raises(DATABASE_ERRORS):      # the connect's own error
        db.connect()
    took = time.monotonic() - began
    assert TIMEOUT - 0.05 <= took <= TIMEOUT + SLACK + 1.0, took
    proxy.hang(False)
    db.connect()
    assert db.execute_sql('SELECT 1').fetchone()[0] == 1
    db.close()


# -- A driver that offers no bound -------------------------------------------

class StuckFirstConnect(pp.PooledSqliteDatabase):
    """Its first connect blocks until ``release`` is set, as a driver with
    no connect timeout on a silent network."""

    def __init__(self, *args, **kwargs):
        self.release = threading.Event()
        self.connects = 0
        super().__init__(*args, **kwargs)

    def _connect(self):
        self.connects += 1
        if self.connects == 1:
            self.release.wait(30)
        return super()._connect()


def test_a_connect_nothing_can_end_is_counted_and_not_waited_for(tmp_path):
    db = StuckFirstConnect(str(tmp_path / 'stuck.db'), max_connections=2,
                           timeout=TIMEOUT)
    try:
        began = time.monotonic()
        with pytest.raises(pp.MaxConnectionsExceeded,
                           match='a connect under way.*timeout=2.0s'):
            db.connect()
        assert TIMEOUT - 0.05 <= time.monotonic() - began <= TIMEOUT + SLACK
        # Past the pool's deadline for it, the connect is counted and no
        # longer counted on; its slot stays held (the connection may exist).
        wait_until(lambda: db.pool_stats()['io_timeouts'] == 1,
                   what='the connect to be overdue')
        assert db._reserved == 1
        # The next request gets a connect of its own in the free slot.
        with db.connection_context():
            assert db.execute_sql('SELECT 1').fetchone()[0] == 1
        assert db._reserved == 1
        db.release.set()             # the late connection lands in the heap
        settled(db)
        stats = db.pool_stats()
        assert (stats['open'], stats['idle'], stats['created']) == (2, 2, 2)
    finally:
        db.release.set()
        db.close_all()


def test_a_waiter_gives_up_at_its_deadline_while_its_connect_is_under_way(
        tmp_path):
    db = StuckFirstConnect(str(tmp_path / 'stuck.db'), max_connections=1,
                           timeout=0.2)
    try:
        with pytest.raises(pp.MaxConnectionsExceeded,
                           match='timed out waiting for a connect under'):
            db.connect()
        assert db.pool_stats()['timeouts'] == 1
        db.release.set()             # the connect lands: idle, for the next
        settled(db)
        assert db.pool_stats()['idle'] == 1
        with db.connection_context():
            assert db.execute_sql('SELECT 1').fetchone()[0] == 1
        assert db.pool_stats()['created'] == 1
    finally:
        db.release.set()
        db.close_all()


@pytest.fixture(params=[Psycopg2Backend, MySQLBackend],
                ids=[Psycopg2Backend.name, MySQLBackend.name])
def socket_backend(request, tmp_path):
    yield from _backend(request.param, tmp_path)


def test_close_all_ends_a_close_that_blocks_at_the_deadline(socket_backend):
    # A close that waits on its host (as a driver's goodbye into a full
    # send buffer to a silent host would): close_all() stops the pool's
    # work first, and its own closes still end at the deadline.
    db = socket_backend.make_db(max_connections=1, timeout=TIMEOUT)
    with db.connection_context():
        db.execute_sql('SELECT 1')
    original = db._close

    def blocking_close(conn):
        fd = db._fileno(conn)
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.settimeout(30)
            sock.recv(1)             # the server says nothing: blocks
        original(conn)

    db._close = blocking_close
    began = time.monotonic()
    assert db.close_all() == 1
    took = time.monotonic() - began
    assert TIMEOUT - 0.05 <= took <= TIMEOUT + SLACK, took
    stats = db.pool_stats()
    assert (stats['io_timeouts'], stats['open'], db._reserved) == (1, 0, 0)
    wait_until(lambda: not socket_backend.server_ids(),
               what='the server to see the connection closed')
    del db._close
    with db.connection_context():
        assert db.execute_sql('SELECT 3').fetchone()[0] == 3
