"""Waiting for a connection: first come first served, deadlines, limits."""
import threading

import pytest

import playhouse_pool as pp
from conftest import held_elsewhere, run_threads, wait_until


def start_waiter(db, name, outcome, then_close=True):
    """A thread that checks out (waiting), notes what happened, closes."""
    def run():
        try:
            db.connect()
        except pp.MaxConnectionsExceeded as exc:
            outcome.append((name, exc))
            return
        outcome.append((name, db.connection()))
        if then_close:
            db.close()
    thread = threading.Thread(target=run, name=name)
    before = db.pool_stats()['waiting']
    thread.start()
    wait_until(lambda: db.pool_stats()['waiting'] == before + 1,
               what='%s to queue' % name)
    return thread


def test_waiters_are_served_in_arrival_order(backend):
    db = backend.make_db(max_connections=1, timeout=30)
    db.connect()
    served = []
    threads = [start_waiter(db, 'w%d' % i, served) for i in range(5)]
    db.close()                       # hands off w0, who hands off w1, ...
    for t in threads:
        t.join(10)
    assert [name for name, _ in served] == ['w0', 'w1', 'w2', 'w3', 'w4']
    assert db.pool_stats()['created'] == 1


def test_a_freed_slot_goes_to_the_first_waiter(backend):
    db = backend.make_db(max_connections=1, timeout=30)
    db.connect()
    served = []
    threads = [start_waiter(db, 'w%d' % i, served) for i in range(2)]
    db.manual_close()                # no connection to hand: a slot instead
    for t in threads:
        t.join(10)
    assert [name for name, _ in served] == ['w0', 'w1']
    assert db.pool_stats()['open'] == 1


def test_waiter_past_its_deadline_raises_and_takes_nothing_after(backend):
    # Opened ahead: a first connect may take longer than this timeout.
    db = backend.make_db(max_connections=1, min_connections=1, timeout=0.05)
    db.warm_up()
    db.connect()
    outcome = []

    def late(_):
        try:
            db.connect()
        except pp.MaxConnectionsExceeded as exc:
            outcome.append(exc)

    run_threads(1, late)
    assert len(outcome) == 1
    assert isinstance(outcome[0], pp.MaxConnectionsExceeded)
    db.close()                       # nobody waits: back to the idle heap
    stats = db.pool_stats()
    assert (stats['idle'], stats['in_use'], stats['waiting']) == (1, 0, 0)


def test_returned_connection_goes_idle_when_nobody_waits(backend):
    db = backend.make_db(max_connections=1, timeout=30)
    db.connect()
    db.close()
    assert len(db._connections) == 1 and not db._ledger.waiters


def test_max_waiting_rejects_the_next_waiter_at_once(backend):
    db = backend.make_db(max_connections=1, timeout=30, max_waiting=1)
    db.connect()
    outcome = []
    first = start_waiter(db, 'first', outcome)

    def second(_):
        with pytest.raises(pp.MaxConnectionsExceeded, match='max_waiting'):
            db.connect()

    run_threads(1, second)
    db.close()
    first.join(10)
    assert outcome[0][0] == 'first' and not isinstance(
        outcome[0][1], Exception)
    assert db.pool_stats()['timeouts'] == 1


def test_close_all_serves_waiting_threads_with_new_connections(backend):
    """As in peewee: close_all() closes every connection, and the threads
    waiting for one are served by new connections."""
    db = backend.make_db(max_connections=1, timeout=30)
    db.connect()
    old = db.connection()
    outcome = []
    threads = [start_waiter(db, 'w%d' % i, outcome) for i in range(3)]
    assert db.close_all() == 1
    for t in threads:
        t.join(10)
    assert [name for name, _ in outcome] == ['w0', 'w1', 'w2']
    assert all(conn is not old and not isinstance(conn, Exception)
               for _, conn in outcome)
    stats = db.pool_stats()
    assert (stats['waiting'], stats['timeouts'], stats['in_use']) == (0, 0, 0)


def test_close_all_with_a_timeout_fails_every_waiter(backend):
    """A graceful shutdown refuses checkouts: the waiting threads too."""
    db = backend.make_db(max_connections=1, timeout=30)
    db.connect()
    outcome = []
    threads = [start_waiter(db, 'w%d' % i, outcome) for i in range(3)]
    db.close_all(timeout=5)
    for t in threads:
        t.join(10)
    assert len(outcome) == 3
    assert all(isinstance(err, pp.PoolClosedError) for _, err in outcome)
    assert db.pool_stats()['waiting'] == 0
    db.connect()                     # usable again
    db.close()


def test_timeout_zero_waits_until_a_connection_comes(backend):
    db = backend.make_db(max_connections=1, timeout=0)
    db.connect()
    served = []
    t = start_waiter(db, 'patient', served)
    db.close()
    t.join(10)
    assert served and served[0][0] == 'patient'


def test_a_waiter_interrupted_by_an_exception_leaves_nothing_behind(backend):
    """A signal handler (or gevent.Timeout) raising out of the wait: the
    waiter leaves the queue, or passes on what it was just handed."""
    db = backend.make_db(max_connections=1, timeout=30)
    interrupted = []

    def waiter_interrupted(_):
        try:
            db.connect()
        except KeyboardInterrupt:
            interrupted.append(True)

    original = pp.waiting.ThreadWaiter.sleep

    def wait_then_interrupt(self, timeout):
        original(self, timeout)            # served (or timed out) ...
        raise KeyboardInterrupt            # ... and interrupted right after

    db.connect()
    pp.waiting.ThreadWaiter.sleep = wait_then_interrupt
    try:
        t = threading.Thread(target=waiter_interrupted, args=(0,))
        t.start()
        wait_until(lambda: db.pool_stats()['waiting'] == 1, what='waiter')
        db.close()                          # handed to the waiter
        t.join(10)
    finally:
        pp.waiting.ThreadWaiter.sleep = original
    assert interrupted == [True]
    stats = db.pool_stats()
    assert (stats['in_use'], stats['idle'], stats['waiting']) == (0, 1, 0)
    db.connect()                            # and it is usable
    db.close()


def reinit(db, **options):
    """init() as a deferred-database user would call it: same database and
    connect parameters, new pool options."""
    db.init(db.database, **dict(db.connect_params, **options))


def test_lowering_max_connections_shrinks_the_pool_as_connections_return(
        backend):
    db = backend.make_db(max_connections=4, timeout=30)
    both_hold = threading.Barrier(3)
    release = threading.Event()

    def hold():
        db.connect()
        both_hold.wait(10)
        release.wait(10)
        db.close()

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for t in holders:
        t.start()
    both_hold.wait(10)
    db.connect()                         # a third connection, left idle
    db.close()
    assert db.pool_stats()['open'] == 3
    reinit(db, max_connections=1, timeout=30)
    stats = db.pool_stats()
    assert (stats['idle'], stats['in_use']) == (0, 2)   # idle closed now
    outcome = []
    waiter = start_waiter(db, 'waiter', outcome)
    release.set()
    for t in holders:
        t.join(10)
    waiter.join(10)
    assert outcome and outcome[0][0] == 'waiter'
    wait_until(lambda: db._reserved == 0, what='the closes to finish')
    stats = db.pool_stats()
    # The holders' connections closed at check-in (or one went on to the
    # waiter): one connection is left, nothing reserved.
    assert (stats['open'], stats['in_use'], stats['waiting']) == (1, 0, 0)
    assert stats['created'] - stats['closed'] == 1
    assert db._reserved == 0


def test_raising_max_connections_serves_a_thread_that_read_the_old_limit(
        backend):
    """A checkout that started before init() raised the limit, and reaches
    the pool's lock after it, takes a new slot instead of queueing."""
    db = backend.make_db(max_connections=1, timeout=5)
    real_lock = db._ledger.lock
    arrived, go = threading.Event(), threading.Event()

    class LateLock:
        """The pool's lock; the thread 'late' pauses on its way in."""
        def __enter__(self):
            if threading.current_thread().name == 'late' and not go.is_set():
                arrived.set()
                go.wait(10)
            return real_lock.__enter__()

        def __exit__(self, *exc):
            return real_lock.__exit__(*exc)

        def __getattr__(self, name):
            return getattr(real_lock, name)

    outcome = []
    with held_elsewhere(db):             # the only slot, held throughout
        db._ledger.lock = LateLock()
        late = threading.Thread(target=lambda: outcome.append(
            db.connect() and db.close()), name='late')
        late.start()
        assert arrived.wait(10)          # checkout started, lock not yet
        reinit(db, max_connections=2, timeout=5)
        go.set()
        late.join(10)
    db._ledger.lock = real_lock
    assert outcome == [True]             # served, not MaxConnectionsExceeded
