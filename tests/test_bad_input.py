"""Misuse gets a clear error (or peewee's harmless no-op) and the pool keeps
working with exact counts."""
import threading

import peewee
import pytest

import playhouse_pool as pp
from conftest import wait_until


def connect_twice(db):
    db.connect()
    try:
        db.connect()
    finally:
        db.close()


def close_in_transaction(db):
    db.connect()
    try:
        with db.atomic():
            db.close()
    finally:
        db.close()


def manual_close_in_transaction(db):
    db.connect()
    try:
        with db.atomic():
            db.manual_close()
    finally:
        db.close()


MISUSE = [
    # (what, action, expected error or None for a no-op, message)
    ('close twice', lambda db: (db.connect(), db.close(), db.close()),
     None, None),
    ('close with nothing open', lambda db: db.close(), None, None),
    ('manual_close with nothing open', lambda db: db.manual_close(), None,
     None),
    ('connect twice', connect_twice, peewee.OperationalError,
     'already opened'),
    ('close inside a transaction', close_in_transaction,
     peewee.OperationalError, 'transaction is open'),
    ('manual_close inside a transaction', manual_close_in_transaction,
     peewee.OperationalError, 'transaction is open'),
    ('close_stale with a negative age', lambda db: db.close_stale(age=-1),
     ValueError, 'age'),
    ('close_stale with a text age', lambda db: db.close_stale(age='old'),
     TypeError, 'age'),
    ('close_all with a negative timeout',
     lambda db: db.close_all(timeout=-1), ValueError, 'timeout'),
    ('init with a bad keyword', lambda db: db.init(db.database,
                                                   max_connections=-5),
     ValueError, 'max_connections'),
]


@pytest.mark.parametrize('what, action, error, message', MISUSE,
                         ids=[m[0] for m in MISUSE])
def test_misuse_is_clear_and_harmless(backend, what, action, error, message):
    db = backend.make_db(max_connections=2)
    if error is None:
        action(db)
    else:
        with pytest.raises(error, match=message):
            action(db)
    assert db.is_closed()
    with db.connection_context():
        assert db.execute_sql('SELECT 1').fetchone()[0] == 1
    stats = db.pool_stats()
    assert stats['in_use'] == 0 and db._reserved == 0
    assert stats['open'] == stats['created'] - stats['closed'] <= 2
    assert db._pool_options.max_connections == 2


def test_connect_on_an_uninitialised_database_says_so():
    db = pp.PooledPostgresqlDatabase(None)
    with pytest.raises(peewee.InterfaceError, match='initialized'):
        db.connect()
    with pytest.raises(peewee.InterfaceError, match='initialized'):
        db.close()


@pytest.mark.parametrize('timeout', [None, 5])
def test_a_connect_keyword_the_driver_rejects_fails_at_once(backend, timeout):
    db = backend.make_db(timeout=timeout, no_such_option=1)
    with pytest.raises(Exception, match='no_such_option') as info:
        db.connect()
    assert 'could not connect' not in str(info.value)    # not retried
    stats = db.pool_stats()
    assert (stats['open'], stats['created']) == (0, 0) and db._reserved == 0
    assert db.is_closed()


@pytest.mark.parametrize('value, error', [
    (float('nan'), ValueError), (-1, ValueError), ('soon', TypeError)])
def test_close_all_rejects_a_bad_timeout_and_changes_nothing(backend, value,
                                                             error):
    db = backend.make_db(max_connections=2)
    db.connect()
    with pytest.raises(error, match='timeout'):
        db.close_all(timeout=value)
    assert not db.is_closed() and db.pool_stats()['in_use'] == 1
    db.close()


def test_dispose_with_a_waiting_thread_fails_it_and_stays_usable(backend):
    db = backend.make_db(max_connections=1, timeout=30)
    db.connect()
    outcome = []

    def wait_for_one(_):
        try:
            db.connect()
        except pp.PoolClosedError as exc:
            outcome.append(exc)

    t = threading.Thread(target=wait_for_one, args=(0,))
    t.start()
    wait_until(lambda: db.pool_stats()['waiting'] == 1, what='the waiter')
    db.dispose()
    t.join(10)
    assert len(outcome) == 1
    assert db.is_closed() and db.pool_stats()['open'] == 0
    with db.connection_context():
        assert db.execute_sql('SELECT 1').fetchone()[0] == 1
