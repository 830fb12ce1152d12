"""A connection's life off the request path (docs/design.rst, rule 8): workers
open, replace, age and ping connections; the minimum is kept open; a
waiter is served by whatever comes first."""
import logging
import threading
import time

import peewee
import pytest

import playhouse_pool as pp
from conftest import (Psycopg2Backend, age, housekeep, idle_records,
                      run_threads,
                      settled, wait_until)
from test_housekeeping import open_idle

SECRET = 'pw-4f1d9c-secret'


def record_calls(db, name):
    """Wrap ``db.<name>`` so each call's thread is recorded."""
    calls = []
    original = getattr(db, name)

    def wrapper(*args):
        calls.append(threading.current_thread())
        return original(*args)
    setattr(db, name, wrapper)
    return calls


# -- Who opens connections --------------------------------------------------

def test_workers_start_at_the_first_checkout_not_before(backend):
    db = backend.make_db(min_connections=2)
    assert db._lender.workers is None and db._lender.housekeeper is None
    assert db.pool_stats()['open'] == 0
    with db.connection_context():
        pass
    housekeeper = db._lender.housekeeper
    assert housekeeper is not None and housekeeper.is_alive()
    wait_until(lambda: db.pool_stats()['open'] == 2, what='the minimum')


def test_connections_are_opened_by_workers_never_the_request(backend):
    db = backend.make_db(max_connections=4)
    opened_on = record_calls(db, '_connect')
    barrier = threading.Barrier(4)

    def request(_):
        with db.connection_context():
            barrier.wait()
            return threading.current_thread()

    requests = run_threads(4, request)
    assert len(opened_on) == 4
    assert not set(opened_on) & set(requests)
    assert {t.name for t in opened_on} == {'playhouse_pool-worker'}


def test_a_waiter_is_served_by_a_checkin_while_its_connect_hangs(proxied):
    backend, proxy, make_db = proxied
    db = make_db(max_connections=3, timeout=30)
    db.connect()                       # this thread holds the only one
    mine = db.connection()
    proxy.hang(True)                   # from now on connects never finish
    got, done = {}, threading.Event()

    def take(name):
        db.connect()
        got[name] = db.connection()
        done.wait(30)
        db.close()

    first = threading.Thread(target=take, args=('first',))
    first.start()
    wait_until(lambda: db._reserved == 1 and db.pool_stats()['waiting'] == 1,
               what='the connect for the waiter to start')
    db.close()                         # check-in: straight to the waiter
    wait_until(lambda: 'first' in got, what='the waiter to be served')
    assert got['first'] is mine
    assert db._reserved == 1           # ... while its connect still hangs
    # The next thread is covered by the connect under way: no second one.
    second = threading.Thread(target=take, args=('second',))
    second.start()
    wait_until(lambda: db.pool_stats()['waiting'] == 1, what='second waiter')
    assert db._reserved == 1
    proxy.hang(False)                  # the late connection lands ...
    wait_until(lambda: 'second' in got, what='the late connection')
    done.set()
    first.join(30)
    second.join(30)
    settled(db)
    stats = db.pool_stats()
    # ... with the second thread: two connections, ever.
    assert (stats['created'], stats['open'], stats['idle']) == (2, 2, 2)
    assert stats['closed'] == 0


# -- The minimum ------------------------------------------------------------

def test_min_connections_are_opened_ahead_and_refilled_after_a_kill(
        server_backend):
    db = server_backend.make_db(min_connections=3, max_connections=5,
                                ping_after=0.1)
    with db.connection_context():
        pass
    # Open on the pool's side, not only the server's: a connection still in
    # its handshake is on the server's list already, and killing that one
    # is a failed connect, not a refill.
    wait_until(lambda: db.pool_stats()['open'] == 3, what='the minimum')
    settled(db)
    wait_until(lambda: len(server_backend.server_ids()) == 3,
               what='the minimum to open')
    victim = sorted(server_backend.server_ids())[0]
    server_backend.kill(victim)
    # The housekeeper finds it dead (its socket says so) and replaces it.
    wait_until(lambda: (victim not in server_backend.server_ids()
                        and len(server_backend.server_ids()) == 3
                        and db.pool_stats()['created'] == 4),
               what='the minimum to be refilled')
    settled(db)
    assert db.pool_stats()['open'] == 3
    with db.connection_context():
        assert db.execute_sql('SELECT 1').fetchone()[0] == 1


class HeldCloses(pp.PooledSqliteDatabase):
    """Its connections' closes wait for ``release``."""

    def __init__(self, *args, **kwargs):
        self.closing, self.release = threading.Event(), threading.Event()
        super().__init__(*args, **kwargs)

    def _close(self, conn):
        self.closing.set()
        self.release.wait(10)
        super()._close(conn)


def test_a_connection_being_replaced_counts_toward_the_minimum(tmp_path):
    db = HeldCloses(str(tmp_path / 'held.db'), min_connections=2,
                    max_connections=4)
    try:
        db.warm_up()
        assert db.recycle() == 2        # both replaced: their closes held
        db.closing.wait(10)
        housekeep(db)                   # a round meanwhile refills nothing
        db.release.set()
        settled(db)
        stats = db.pool_stats()
        assert (stats['open'], stats['created']) == (2, 4)
    finally:
        db.release.set()
        db.close_all()


def test_warm_up_opens_the_minimum_and_waits_for_it(backend):
    db = backend.make_db(min_connections=3, max_connections=5)
    db.warm_up(timeout=30)
    stats = db.pool_stats()
    assert (stats['open'], stats['idle'], stats['created']) == (3, 3, 3)


def test_warm_up_says_how_far_it_got_when_connects_fail(proxied):
    backend, proxy, make_db = proxied
    db = make_db(min_connections=2, timeout=0.3)
    proxy.refuse = True
    with pytest.raises(peewee.OperationalError,
                       match='opened 0 of min_connections=2') as info:
        db.warm_up(timeout=0.5)
    assert info.value.__cause__ is not None
    proxy.refuse = False
    db.warm_up(timeout=30)             # the pool recovers by itself
    assert db.pool_stats()['open'] == 2


# -- Ageing -----------------------------------------------------------------

def test_each_connection_has_its_own_age_limit_below_stale_timeout(backend):
    db = backend.make_db(stale_timeout=100, max_connections=8)
    open_idle(db, 8)
    limits = [record.expires - record.opened for record in idle_records(db)]
    assert len(limits) == 8
    assert all(95 <= limit < 100 for limit in limits)
    assert len(set(limits)) > 1


def test_slow_connects_spread_a_cohorts_age_limits_over_a_few_connects():
    # stale_timeout=1 with 100 ms connects: 5% (50 ms) would not cover one
    # replacement's connect; three connects' worth (300 ms) do.
    from playhouse_pool.records import PoolConnection
    records = [PoolConnection(object(), i, None, None, 0.0)
               for i in range(200)]
    for record in records:
        record.connect_seconds = 0.1
        record.set_age_limit(1.0)
    limits = [record.expires for record in records]
    assert 0.7 <= min(limits) and max(limits) <= 1.0
    assert max(limits) - min(limits) > 0.2


def test_idle_connections_past_their_age_are_replaced_by_the_housekeeper(
        backend):
    db = backend.make_db(stale_timeout=3600, max_connections=4)
    open_idle(db, 2)
    old = [record.conn for record in idle_records(db)]
    for record in idle_records(db):
        age(record, 7200)
    housekeep(db)
    wait_until(lambda: db.pool_stats()['created'] == 4, what='replacements')
    settled(db)
    assert all(db._is_closed(conn) for conn in old)
    assert db.pool_stats()['idle'] == 2


def test_the_last_open_connection_is_kept_past_its_jittered_age(backend):
    """Past its own limit but not past stale_timeout, the only connection
    goes on serving rather than leave the pool empty for a connect."""
    db = backend.make_db(stale_timeout=3600, max_connections=2)
    db.connect()
    conn = db.connection()
    record = db._in_use[id(conn)]
    record.expires = time.monotonic() - 1       # its own limit passed
    db.close()
    db.connect()
    assert db.connection() is conn
    db.close()
    age(record, 7200)                           # now past stale_timeout
    db.connect()
    assert db.connection() is not conn
    db.close()


# -- Keepalive --------------------------------------------------------------

def test_keepalive_pings_idle_connections_never_checked_out_ones(backend):
    db = backend.make_db(ping_after=0.05, max_connections=3)
    pinged = []
    ping = db._ping
    db._ping = lambda conn: (pinged.append(
        (conn, threading.current_thread())), ping(conn))[1]
    open_idle(db, 2)
    db.connect()
    held = db.connection()
    wait_until(lambda: any(c is not held for c, _ in pinged),
               what='a keepalive ping of the idle connection')
    housekeep(db)
    housekeep(db)
    assert held not in [c for c, _ in pinged]
    assert threading.current_thread() not in [t for _, t in pinged]
    db.close()
    wait_until(lambda: any(c is held for c, _ in pinged),
               what='a ping of the connection once checked in')


def test_a_checkout_after_ping_after_sends_nothing(server_backend):
    db = server_backend.make_db(ping_after=3600)
    pinged = record_calls(db, '_ping')
    db.connect()
    conn_id = server_backend.conn_id(db)
    db.close()
    idle_records(db)[0].returned -= 7200      # idle past ping_after
    before = server_backend.last_activity(conn_id)
    db.connect()                                # no round trip
    assert server_backend.last_activity(conn_id) == before
    assert pinged == []
    db.close()


# -- recycle() --------------------------------------------------------------

def test_recycle_replaces_every_connection_while_a_load_runs(server_backend):
    db = server_backend.make_db(max_connections=4, timeout=30)
    stop = threading.Event()
    errors = []

    def load():
        while not stop.is_set():
            try:
                with db.connection_context():
                    db.execute_sql('SELECT 1').fetchone()
            except Exception as exc:        # any error fails the test
                errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(server_backend.server_ids()) == 4,
                   what='the pool to grow')
        before = server_backend.server_ids()
        assert db.recycle() >= 4
        wait_until(lambda: not (server_backend.server_ids() & before),
                   what='every connection to be replaced')
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert errors == []
    settled(db)
    assert len(server_backend.server_ids()) == db.pool_stats()['open'] <= 4
    assert db.pool_stats()['recycled'] >= 4


# -- Per-connect credentials and configure ----------------------------------

def credentials_for(backend):
    """A connect keyword as a callable: Postgres trusts any password, the
    MySQL server's root has none (so its user name comes from one)."""
    calls = []
    if backend.server == 'postgres':
        def password():
            calls.append(threading.current_thread())
            return SECRET
        return {'password': password}, calls

    def user():
        calls.append(threading.current_thread())
        return 'root'
    return {'user': user}, calls


def test_a_callable_connect_keyword_is_called_for_each_new_connection(
        server_backend, caplog):
    caplog.set_level(logging.DEBUG)
    params, calls = credentials_for(server_backend)
    db = server_backend.make_db(max_connections=3, **params)
    open_idle(db, 3)
    for _ in range(5):                         # reuse: no more calls
        with db.connection_context():
            db.execute_sql('SELECT 1')
    assert len(calls) == 3
    assert {t.name for t in calls} == {'playhouse_pool-worker'}
    assert callable(list(params.values())[0])
    text = ' '.join(r.getMessage() for r in caplog.records)
    assert SECRET not in text + repr(db) + str(db.pool_stats())
    assert SECRET not in repr(db.connect_params)


@pytest.mark.parametrize('server_backend', [Psycopg2Backend], indirect=True)
def test_a_failing_password_callable_fails_the_connect_not_the_pool(
        server_backend):
    def password():
        raise peewee.OperationalError('the vault is sealed')
    db = server_backend.make_db(password=password)
    with pytest.raises(peewee.OperationalError, match='vault'):
        db.connect()
    assert db.pool_stats()['open'] == 0 and db._reserved == 0


def test_configure_runs_once_on_each_new_connection(backend):
    configured = []
    db = backend.make_db(max_connections=3,
                         configure=lambda conn: configured.append(conn))
    for _ in range(5):
        with db.connection_context():
            assert db.connection() is configured[0]
    open_idle(db, 3)
    assert len(configured) == 3
    assert len({id(c) for c in configured}) == 3


@pytest.mark.parametrize('server_backend', [Psycopg2Backend], indirect=True)
def test_configure_sets_up_the_session_before_the_first_checkout(
        server_backend):
    def configure(conn):
        conn.cursor().execute("SET statement_timeout = '4321ms'")
    db = server_backend.make_db(configure=configure)
    with db.connection_context():
        assert db.execute_sql('SHOW statement_timeout').fetchone()[0] == \
            '4321ms'


def test_a_configure_error_discards_the_connection(backend):
    attempts = []

    def configure(conn):
        attempts.append(conn)
        if len(attempts) == 1:
            raise RuntimeError('not ready yet')
    # Without a timeout the error surfaces at once ...
    db = backend.make_db(configure=configure)
    with pytest.raises(pp.errors.ConfigureError, match='not ready yet'):
        db.connect()
    assert db.pool_stats()['open'] == 0 and db._reserved == 0
    assert db._is_closed(attempts[0])
    # ... with one, another connection is tried within it.
    attempts.clear()
    db = backend.make_db(configure=configure, timeout=10)
    with db.connection_context():
        assert db.connection() is attempts[1]
    assert db._is_closed(attempts[0])


def test_configure_must_be_callable(backend):
    with pytest.raises(TypeError, match='configure'):
        backend.make_db(configure='SET x = 1')


# -- Outage and shutdown ----------------------------------------------------

def test_an_outage_raises_about_at_the_timeout_chaining_the_driver_error(
        proxied):
    backend, proxy, make_db = proxied
    db = make_db(timeout=1)
    proxy.refuse = True
    start = time.monotonic()
    with pytest.raises(peewee.OperationalError,
                       match='could not connect') as info:
        db.connect()
    elapsed = time.monotonic() - start
    assert 0.9 <= elapsed <= 1.5, elapsed
    assert info.value.__cause__ is not None
    proxy.refuse = False
    with db.connection_context():               # recovers by itself
        assert db.execute_sql('SELECT 1').fetchone()[0] == 1


def test_close_all_stops_the_workers_and_the_next_checkout_restarts(backend):
    db = backend.make_db(max_connections=4, min_connections=1)
    open_idle(db, 3)
    workers, housekeeper = db._lender.workers, db._lender.housekeeper
    assert workers.threads > 0 and housekeeper.is_alive()
    db.close_all()
    wait_until(lambda: workers.threads == 0 and not housekeeper.is_alive(),
               what='the workers to stop')
    settled(db)
    assert db.pool_stats()['open'] == 0       # the minimum is not refilled
    with db.connection_context():
        assert db.execute_sql('SELECT 1').fetchone()[0] == 1
    housekeeper = db._lender.housekeeper
    assert housekeeper is not None and housekeeper.is_alive()


def test_recycle_replaces_a_connection_out_for_its_keepalive_ping(
        server_backend):
    db = server_backend.make_db(max_connections=1, min_connections=1,
                                ping_after=0.1, timeout=10)
    pinging, answer = threading.Event(), threading.Event()
    original = db._ping

    def held_ping(conn):
        pinging.set()
        answer.wait(10)
        return original(conn)

    with db.connection_context():
        db.execute_sql('SELECT 1')
    before = server_backend.server_ids()
    db._ping = held_ping
    assert pinging.wait(10), 'no keepalive ping'
    assert db.recycle() == 1         # the one out for its ping
    answer.set()
    wait_until(lambda: server_backend.server_ids()
               and not (server_backend.server_ids() & before),
               what='the pinged connection to be replaced')
    del db._ping
    with db.connection_context():
        assert db.execute_sql('SELECT 2').fetchone()[0] == 2
    assert db.pool_stats()['recycled'] == 1
