"""What the pool does by itself: idle eviction, leak warnings, reclaiming
connections of threads that ended without close()."""
import gc
import logging
import threading
import time

import playhouse_pool as pp
from conftest import housekeep, run_threads, wait_until
from test_pool import count_items, make_model


def open_idle(db, count):
    barrier = threading.Barrier(count)

    def hold(_):
        db.connect()
        barrier.wait()
        db.close()
    run_threads(count, hold)


def test_idle_connections_are_closed_after_idle_timeout(backend):
    db = backend.make_db(idle_timeout=0.05)
    open_idle(db, 3)
    wait_until(lambda: db.pool_stats()['closed'] == 3, what='idle eviction')
    assert db.pool_stats()['open'] == 0
    db.connect()
    assert db.execute_sql('SELECT 1').fetchone()[0] == 1
    db.close()


def test_idle_eviction_keeps_min_connections(backend):
    db = backend.make_db(idle_timeout=0.05, min_connections=2)
    open_idle(db, 4)
    wait_until(lambda: db.pool_stats()['closed'] == 2, what='idle eviction')
    # Several more rounds of the housekeeper leave the minimum alone.
    for _ in range(3):
        housekeep(db)
    assert db.pool_stats()['open'] == 2


def test_checked_out_connections_are_not_evicted_as_idle(backend):
    db = backend.make_db(idle_timeout=0.05)
    db.connect()
    conn = db.connection()
    db._lender.housekeeping.evict_idle(time.monotonic() + 3600, 0.05)
    stats = db.pool_stats()
    assert (stats['in_use'], stats['closed']) == (1, 0)
    assert not db._is_closed(conn)
    db.close()


def test_leak_warning_names_the_checkout_stack(backend, caplog):
    db = backend.make_db(leak_timeout=0.05)
    caplog.set_level(logging.WARNING, logger='playhouse_pool')

    def checkout_here_and_forget():
        db.connect()

    checkout_here_and_forget()
    [key] = db._ledger.in_use
    mine = 'Connection %s ' % key      # not another test's pool's warning

    def leaks():
        return [r.getMessage() for r in caplog.records
                if 'leak_timeout' in r.getMessage()
                and r.getMessage().startswith(mine)]
    wait_until(leaks, what='a leak warning')
    assert len(leaks()) == 1
    assert 'checkout_here_and_forget' in leaks()[0]
    # Reported once per checkout:
    assert db._lender.housekeeping.leaked(time.monotonic(), 0.0) == []
    assert len(leaks()) == 1
    db.close()


def test_connection_of_a_dead_thread_is_reclaimed(backend, caplog):
    db = backend.make_db(max_connections=1)
    caplog.set_level(logging.WARNING, logger='playhouse_pool')

    def forget_to_close(_):
        db.connect()
        return db.connection()

    [conn] = run_threads(1, forget_to_close)
    db.connect()                     # would fail without reclamation
    assert db.connection() is conn
    db.close()
    assert db.pool_stats()['reclaimed'] == 1
    assert any('Reclaimed' in r.getMessage() and 'Thread-' in r.getMessage()
               for r in caplog.records)


def test_reclaimed_connection_is_rolled_back(backend):
    db = backend.make_db(max_connections=1)
    Item = make_model(db, backend)

    def die_in_a_transaction(_):
        db.connect()
        db.execute_sql('BEGIN')
        Item.create(name='never committed')

    run_threads(1, die_in_a_transaction)
    db.connect()
    assert Item.select().count() == 0
    db.close()
    assert count_items(backend, db, Item) == 0


def test_service_whose_threads_never_close_keeps_running(backend):
    db = backend.make_db(max_connections=2, timeout=30)

    def request(_):
        db.connect()
        return db.execute_sql('SELECT 1').fetchone()[0]

    for _ in range(10):
        assert run_threads(4, request) == [1, 1, 1, 1]
    stats = db.pool_stats()
    assert stats['open'] <= 2 and stats['reclaimed'] >= 38


def test_shared_state_connection_is_not_reclaimed_when_its_opener_ends(
        backend):
    """thread_safe=False: one connection state for all threads, so the
    thread that opened it ending does not make it abandoned."""
    db = backend.make_db(thread_safe=False, max_connections=1)
    run_threads(1, lambda _: db.connect())
    assert not db.is_closed()
    assert db.close_idle() == 0
    assert db.execute_sql('SELECT 1').fetchone()[0] == 1
    stats = db.pool_stats()
    assert (stats['in_use'], stats['reclaimed']) == (1, 0)
    db.close()


def test_shared_state_connection_handed_to_a_waiter_is_not_reclaimed(
        backend):
    """thread_safe=False: a connection handed over to a waiting thread has
    no owner either, so that thread ending does not make it abandoned."""
    db = backend.make_db(thread_safe=False, max_connections=1, timeout=30)
    db.connect()
    handed = []
    waiter = threading.Thread(
        target=lambda: handed.append(db._lender.checkout(None).conn))
    waiter.start()
    wait_until(lambda: db.pool_stats()['waiting'] == 1, what='the waiter')
    db.close()                   # straight to the waiting thread
    waiter.join(10)
    assert not waiter.is_alive() and len(handed) == 1
    db._sweeps.reclaim()             # the scan for dead owners
    stats = db.pool_stats()
    assert (stats['in_use'], stats['reclaimed']) == (1, 0)
    db._checkin(handed[0], True)


def test_a_thread_failed_by_close_all_is_still_reclaimed_when_it_ends(
        backend):
    """Its PoolClosedError, once handled, leaves nothing that keeps the
    thread's guard alive: its later connection comes back at its exit, to
    the thread already waiting (with the garbage collector off, as between
    two of its runs)."""
    db = backend.make_db(max_connections=1, timeout=30)
    db.connect()
    failed, holding, end = (threading.Event(), threading.Event(),
                            threading.Event())

    def fail_then_forget():
        try:
            db.connect()
        except pp.PoolClosedError:
            failed.set()
        db.connect()
        holding.set()
        end.wait(10)                 # ends without close()

    gc.disable()
    try:
        forgetful = threading.Thread(target=fail_then_forget)
        forgetful.start()
        wait_until(lambda: db.pool_stats()['waiting'] == 1, what='waiter')
        db.close_all(timeout=10)        # a shutdown: waiters are failed
        assert failed.wait(10) and holding.wait(10)
        served = []
        waiter = threading.Thread(
            target=lambda: served.append(db.connect() and db.close()))
        waiter.start()
        wait_until(lambda: db.pool_stats()['waiting'] == 1, what='waiter')
        end.set()
        forgetful.join(10)
        waiter.join(10)
    finally:
        gc.enable()
    assert served == [True]
    assert db.pool_stats()['reclaimed'] == 1


def test_reclaim_warning_names_the_thread_that_ended(backend, caplog):
    db = backend.make_db(max_connections=1, timeout=30)
    caplog.set_level(logging.WARNING, logger='playhouse_pool')
    holding, end = threading.Event(), threading.Event()

    def forget_to_close():
        db.connect()
        holding.set()
        end.wait(10)

    forgetful = threading.Thread(target=forget_to_close, name='Forgetful')
    forgetful.start()
    assert holding.wait(10)
    waiter = threading.Thread(target=lambda: (db.connect(), db.close()),
                              name='Patient')
    waiter.start()
    wait_until(lambda: db.pool_stats()['waiting'] == 1, what='the waiter')
    end.set()                        # its connection goes to 'Patient'
    forgetful.join(10)
    waiter.join(10)
    [warning] = [r.getMessage() for r in caplog.records
                 if 'Reclaimed' in r.getMessage()]
    assert "'Forgetful'" in warning and 'Patient' not in warning


def test_a_guard_the_collector_frees_mid_operation_leaves_it_alone(backend):
    """A thread's guard caught in a reference cycle is freed by the garbage
    collector, at any allocation, maybe inside a pool operation of the
    collecting thread: it must not change the bookkeeping under that
    operation. The scan for dead owners takes the connection back later."""
    db = backend.make_db(max_connections=1)
    guards, done = [], threading.Event()

    def forget():
        db.connect()
        guards.append(db._guards._local.guard)
        # Alive until then: the housekeeper's scan for dead owners (any of
        # its rounds) leaves the connection alone meanwhile.
        done.wait(10)

    thread = threading.Thread(target=forget)
    thread.start()
    wait_until(lambda: guards, what='the checkout')
    with db._pool_lock:              # as inside a pool operation
        guards[0].__del__()          # as the collector would call it
        in_use_meanwhile = len(db._in_use)
    assert in_use_meanwhile == 1
    done.set()
    thread.join(10)
    del guards[:]
    db.connect()                     # reclaimed by now, one way or another
    db.close()
    assert db.pool_stats()['reclaimed'] == 1
