"""Through a loopback proxy: slow connects, refused and hung networks,
dropped connections. The proxy sits between the pool and the real server."""
import logging
import threading

import peewee
import pytest

import playhouse_pool as pp
from conftest import run_threads, settled, wait_until


def test_failed_connects_are_retried_and_counts_stay_exact(proxied, caplog):
    backend, proxy, make_db = proxied
    caplog.set_level(logging.WARNING, logger='playhouse_pool')
    db = make_db(max_connections=2, timeout=30)
    proxy.refuse = True
    result = []

    def connect(_):
        db.connect()
        result.append(backend.conn_id(db))
        db.close()

    t = threading.Thread(target=connect, args=(0,))
    t.start()
    wait_until(lambda: sum('retrying' in r.getMessage()
                           for r in caplog.records) >= 2,
               what='two failed attempts')
    assert db.pool_stats()['open'] == 0 and db._reserved == 1
    proxy.refuse = False
    t.join(30)
    assert len(result) == 1
    stats = db.pool_stats()
    assert (stats['open'], stats['created'], db._reserved) == (1, 1, 0)


def test_outage_with_timeout_says_it_could_not_connect(proxied):
    backend, proxy, make_db = proxied
    db = make_db(max_connections=2, timeout=0.5)
    proxy.refuse = True
    with pytest.raises(peewee.OperationalError,
                       match='could not connect') as info:
        db.connect()
    assert info.value.__cause__ is not None       # the driver's last error
    stats = db.pool_stats()
    assert (stats['open'], db._reserved) == (0, 0)
    proxy.refuse = False                          # the database is back
    db.connect()
    assert db.execute_sql('SELECT 1').fetchone()[0] == 1
    db.close()
    assert db.pool_stats()['open'] == 1


def test_hung_network_fails_at_the_timeout_then_recovers(proxied):
    backend, proxy, make_db = proxied
    # No driver limit given: the pool bounds its connects itself, and the
    # request ends at its timeout, saying so (docs/design.rst, rule 9).
    db = make_db(max_connections=2, timeout=1.5)
    proxy.hang(True)
    with pytest.raises((peewee.OperationalError, pp.MaxConnectionsExceeded),
                       match='timeout'):
        db.connect()
    proxy.hang(False)
    with db.connection_context():
        assert db.execute_sql('SELECT 1').fetchone()[0] == 1
    settled(db)
    stats = db.pool_stats()
    assert (stats['open'], db._reserved) == (1, 0)
    wait_until(lambda: len(backend.server_ids()) == 1,
               what="the server's count to match the pool's")


def test_dropped_connections_are_replaced_without_errors(proxied):
    backend, proxy, make_db = proxied
    db = make_db(max_connections=3, timeout=10)
    barrier = threading.Barrier(3)

    def request(_):
        with db.connection_context():
            barrier.wait()
            return db.execute_sql('SELECT 1').fetchone()[0]

    assert run_threads(3, request) == [1, 1, 1]
    proxy.cut_all()                    # a restart, as the pool sees it
    assert run_threads(3, request) == [1, 1, 1]
    stats = db.pool_stats()
    assert (stats['open'], stats['created'], stats['closed']) == (3, 6, 3)
