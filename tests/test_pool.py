"""Checkout and check-in against the real servers (and SQLite)."""
import threading
import time

import peewee
import pytest

import playhouse_pool as pp
from conftest import (DATABASE_ERRORS, age, idle_records, run_threads,
                      wait_until)


def make_model(db, backend):
    class Item(peewee.Model):
        name = peewee.CharField()

        class Meta:
            database = db
            table_name = backend.tag + '_item'
    with db.connection_context():
        db.create_tables([Item])
    return Item


def count_items(backend, db, model):
    """Rows as a fresh connection of another pool sees them."""
    other = backend.make_db(max_connections=1)
    with other.connection_context():
        return other.execute_sql(
            'SELECT COUNT(*) FROM %s' % model._meta.table_name).fetchone()[0]


def test_close_then_connect_reuses_the_same_connection(backend):
    db = backend.make_db()
    db.connect()
    first = db.connection()
    db.close()
    db.connect()
    assert db.connection() is first
    assert db.pool_stats()['created'] == 1
    db.close()


def test_n_threads_open_n_connections_and_all_end_idle(backend):
    db = backend.make_db(max_connections=8)
    barrier = threading.Barrier(5)

    def work(_):
        db.connect()
        barrier.wait()        # all five hold a connection at once
        db.execute_sql('SELECT 1')
        db.close()

    run_threads(5, work)
    assert len(db._connections) == 5
    assert len(db._in_use) == 0
    stats = db.pool_stats()
    assert (stats['open'], stats['idle'], stats['in_use']) == (5, 5, 0)


def test_checkin_rolls_back_a_transaction_left_open(backend):
    db = backend.make_db(max_connections=1)
    Item = make_model(db, backend)
    db.connect()
    db.execute_sql('BEGIN')
    Item.create(name='uncommitted')
    db.close()
    db.connect()
    assert Item.select().count() == 0
    db.close()
    assert count_items(backend, db, Item) == 0


def test_query_error_does_not_poison_the_pool(backend):
    db = backend.make_db(max_connections=1)
    db.connect()
    sql = ("SELECT CAST('x' AS INTEGER) + 1/0" if backend.server == 'postgres'
           else 'SELECT * FROM no_such_table_%s' % backend.tag)
    with pytest.raises(DATABASE_ERRORS):
        db.execute_sql(sql)
    db.close()
    db.connect()
    assert db.execute_sql('SELECT 1').fetchone()[0] == 1
    db.close()


def test_connection_killed_while_idle_is_never_handed_out(server_backend):
    db = server_backend.make_db(max_connections=2)
    db.connect()
    victim = server_backend.conn_id(db)
    db.close()
    server_backend.kill(victim)     # returned a moment ago, now dead

    db.connect()
    assert db.execute_sql('SELECT 1').fetchone()[0] == 1
    assert server_backend.conn_id(db) != victim
    db.close()
    stats = db.pool_stats()
    assert (stats['open'], stats['created'], stats['closed']) == (1, 2, 1)


def test_healthy_checkout_sends_nothing_to_the_server(server_backend):
    db = server_backend.make_db(max_connections=1)
    db.connect()
    conn_id = server_backend.conn_id(db)
    db.close()
    before = server_backend.last_activity(conn_id)
    for _ in range(20):
        db.connect()
        db.close()
    assert server_backend.last_activity(conn_id) == before


def test_ping_after_zero_pings_on_every_checkout(server_backend):
    db = server_backend.make_db(max_connections=1, ping_after=0)
    db.connect()
    conn_id = server_backend.conn_id(db)
    db.close()
    before = server_backend.last_activity(conn_id)
    db.connect()
    db.close()
    assert server_backend.last_activity(conn_id) != before


def test_checkout_beyond_max_raises_at_once_without_timeout(backend):
    db = backend.make_db(max_connections=2)
    release = threading.Event()

    def hold(_):
        db.connect()
        release.wait(10)
        db.close()

    holders = [threading.Thread(target=hold, args=(i,)) for i in range(2)]
    for t in holders:
        t.start()
    wait_until(lambda: db.pool_stats()['in_use'] == 2, what='2 checkouts')
    with pytest.raises(pp.MaxConnectionsExceeded):
        db.connect()
    assert db.is_closed()
    assert db.pool_stats()['timeouts'] == 1
    release.set()
    for t in holders:
        t.join()
    assert db.pool_stats()['open'] == 2


def test_waiter_gets_the_connection_returned_within_timeout(backend):
    db = backend.make_db(max_connections=1, timeout=30)
    db.connect()
    holder_conn = db.connection()
    got = []

    def wait_for_it(_):
        db.connect()
        got.append(db.connection())
        db.close()

    waiter = threading.Thread(target=wait_for_it, args=(0,))
    waiter.start()
    wait_until(lambda: db.pool_stats()['waiting'] == 1, what='the waiter')
    time.sleep(0.05)           # the queued waiter waits at least this long
    db.close()
    waiter.join(10)
    assert got == [holder_conn]
    stats = db.pool_stats()
    assert stats['created'] == 1 and stats['waiting'] == 0
    assert stats['wait_seconds'] >= 0.05


def test_waiter_times_out_with_max_connections_exceeded(backend):
    # Opened ahead: a first connect may take longer than this timeout.
    db = backend.make_db(max_connections=1, min_connections=1, timeout=0.05)
    db.warm_up()
    db.connect()
    errors = []

    def try_connect(_):
        try:
            db.connect()
        except pp.MaxConnectionsExceeded as exc:
            errors.append(exc)

    run_threads(1, try_connect)
    assert len(errors) == 1 and 'timed out' in str(errors[0])
    stats = db.pool_stats()
    assert stats['timeouts'] == 1 and stats['waiting'] == 0
    assert stats['wait_seconds'] >= 0.05
    db.close()


def test_manual_close_really_closes_and_frees_the_slot(backend):
    db = backend.make_db(max_connections=1)
    db.connect()
    conn = db.connection()
    assert db.manual_close() is True
    assert db.is_closed()
    assert db._is_closed(conn)
    assert db.pool_stats()['open'] == 0
    db.connect()                      # the slot is free again
    assert db.connection() is not conn
    db.close()
    assert db.manual_close() is False


def test_close_all_closes_idle_and_checked_out_connections(backend):
    db = backend.make_db(max_connections=4)
    db.connect()
    own = db.connection()
    holding = threading.Event()
    done = threading.Event()
    other = []

    def hold(_):
        db.connect()
        other.append(db.connection())
        holding.set()
        done.wait(10)
        db.close()         # the pool closed it meanwhile: must not come back

    t = threading.Thread(target=hold, args=(0,))
    t.start()
    holding.wait(10)
    run_threads(1, lambda _: (db.connect(), db.close()))   # one idle too
    assert db.pool_stats()['open'] == 3

    assert db.close_all() == 3
    assert db.is_closed()
    assert db._is_closed(own) and db._is_closed(other[0])
    done.set()
    t.join(10)
    stats = db.pool_stats()
    assert (stats['open'], stats['in_use'], stats['idle']) == (0, 0, 0)
    assert db._ledger.closed_keys == {}
    db.connect()                      # still usable: a new connection
    assert db.execute_sql('SELECT 1').fetchone()[0] == 1
    db.close()


def test_close_idle_closes_only_idle_connections(backend):
    db = backend.make_db()
    db.connect()
    run_threads(1, lambda _: (db.connect(), db.close()))
    assert db.pool_stats()['idle'] == 1
    assert db.close_idle() == 1
    assert db.pool_stats()['open'] == 1      # ours is still checked out
    assert db.execute_sql('SELECT 1').fetchone()[0] == 1
    db.close()
    assert db.pool_stats()['idle'] == 1


def test_close_stale_closes_connections_held_too_long(backend):
    db = backend.make_db()
    db.connect()
    held = db.connection()
    assert db.close_stale(age=3600) == 0
    assert db.close_stale(age=0) == 1
    assert db._is_closed(held)
    db.close()                        # the holder's close is a no-op
    assert db.pool_stats()['open'] == 0
    db.connect()
    assert db.connection() is not held
    db.close()


def test_stale_connection_met_at_checkout_is_replaced_by_a_worker(backend):
    closed_on = []
    db = backend.make_db(stale_timeout=3600)
    close = db._close
    db._close = lambda conn: (closed_on.append(threading.current_thread()),
                              close(conn))
    db.connect()
    first = db.connection()
    db.close()
    age(idle_records(db)[0], 7200)
    db.connect()                      # waits for the replacement
    assert db.connection() is not first
    assert db._is_closed(first)
    assert closed_on and threading.current_thread() not in closed_on
    db.close()
    stats = db.pool_stats()
    assert (stats['closed'], stats['created'], stats['open']) == (1, 2, 1)


def test_stale_connection_checked_in_is_replaced_by_a_worker(backend):
    closed_on = []
    db = backend.make_db(stale_timeout=3600)
    close = db._close
    db._close = lambda conn: (closed_on.append(threading.current_thread()),
                              close(conn))
    db.connect()
    first = db.connection()
    age(db._in_use[id(first)], 7200)
    db.close()
    wait_until(lambda: db.pool_stats()['created'] == 2,
               what='the replacement to open')
    assert db._is_closed(first)
    assert threading.current_thread() not in closed_on
    stats = db.pool_stats()
    assert (stats['closed'], stats['open'], stats['idle']) == (1, 1, 1)


def test_close_twice_is_harmless(backend):
    db = backend.make_db()
    db.connect()
    assert db.close() is True
    assert db.close() is False
    assert db.pool_stats()['idle'] == 1


def test_close_inside_a_transaction_raises_and_keeps_the_connection(backend):
    db = backend.make_db()
    db.connect()
    with db.atomic():
        with pytest.raises(peewee.OperationalError):
            db.close()
        assert not db.is_closed()
    db.close()
    assert db.pool_stats()['idle'] == 1


def test_models_work_across_threads(backend):
    db = backend.make_db(max_connections=3, timeout=30)
    Item = make_model(db, backend)

    def work(i):
        for j in range(10):
            with db.connection_context():
                with db.atomic():
                    Item.create(name='%d-%d' % (i, j))

    run_threads(6, work)
    assert count_items(backend, db, Item) == 60
    assert db.pool_stats()['open'] <= 3


def test_a_subclass_connection_hook_runs_on_every_checkout(tmp_path):
    # The pool skips peewee's empty _initialize_connection on its fast path;
    # a body given by a subclass must still run for each checkout.
    seen = []

    class Hooked(pp.PooledSqliteDatabase):
        def _initialize_connection(self, conn):
            seen.append(conn)

    db = Hooked(str(tmp_path / 'hooked.db'), max_connections=1)
    for _ in range(3):
        db.connect()
        db.close()
    assert len(seen) == 3 and seen[0] is seen[1] is seen[2]
    assert db.pool_stats()['created'] == 1


def test_a_connection_hook_set_on_the_instance_runs_on_every_checkout(
        tmp_path):
    seen = []
    db = pp.PooledSqliteDatabase(str(tmp_path / 'hooked.db'),
                                 max_connections=1)
    db._initialize_connection = seen.append
    for _ in range(2):
        db.connect()
        db.close()
    assert len(seen) == 2 and seen[0] is seen[1]


def test_manual_commit_entered_while_closed_connects_and_unwinds(backend):
    db = backend.make_db()
    assert db.is_closed()
    with db.manual_commit():             # on the stack before any connection
        db.begin()
        assert db.execute_sql('SELECT 1').fetchone()[0] == 1
        db.commit()
    assert db.transaction_depth() == 0
    db.close()
    assert db.pool_stats()['in_use'] == 0
