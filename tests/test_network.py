"""Through a loopback proxy: slow connects, refused and hung networks,
dropped connections. The proxy sits between the pool and the real server."""
import logging
import threading

import peewee
import pytest

from conftest import run_threads, wait_until


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


def test_hung_network_fails_within_the_deadline_then_recovers(proxied):
    backend, proxy, make_db = proxied
    # The pool cannot interrupt a driver blocked in connect: each attempt
    # must give up by itself (pymysql's connect_timeout covers only the TCP
    # connect, read_timeout the handshake). The pool retries within its own
    # timeout, then says so.
    limits = {'connect_timeout': 1}
    if backend.server == 'mysql':
        limits['read_timeout'] = 1
    db = make_db(max_connections=2, timeout=1.5, **limits)
    proxy.hang(True)
    with pytest.raises(peewee.OperationalError, match='could not connect'):
        db.connect()
    proxy.hang(False)
    with db.connection_context():
        assert db.execute_sql('SELECT 1').fetchone()[0] == 1
    stats = db.pool_stats()
    assert (stats['open'], stats['created'], db._reserved) == (1, 1, 0)


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
