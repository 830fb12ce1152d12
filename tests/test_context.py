"""execution_context(): its own connection, its own transaction."""
import threading

import pytest

from conftest import run_threads
from test_pool import count_items, make_model


def test_block_runs_on_a_connection_of_its_own(backend):
    db = backend.make_db()
    db.connect()
    outer = backend.conn_id(db)
    with db.execution_context():
        inner = backend.conn_id(db)
    assert inner != outer
    assert backend.conn_id(db) == outer
    db.close()


def test_block_commits_on_success(backend):
    db = backend.make_db()
    Item = make_model(db, backend)
    with db.execution_context():
        Item.create(name='kept')
    assert count_items(backend, db, Item) == 1


def test_block_rolls_back_on_exception(backend):
    db = backend.make_db()
    Item = make_model(db, backend)
    with pytest.raises(ZeroDivisionError):
        with db.execution_context():
            Item.create(name='lost')
            raise ZeroDivisionError("application error")
    assert count_items(backend, db, Item) == 0
    assert db.pool_stats()['in_use'] == 0


def test_without_transaction_each_statement_commits(backend):
    db = backend.make_db()
    Item = make_model(db, backend)
    with pytest.raises(ZeroDivisionError):
        with db.execution_context(with_transaction=False):
            Item.create(name='autocommitted')
            raise ZeroDivisionError("application error")
    assert count_items(backend, db, Item) == 1


def test_nested_blocks_each_get_their_own_connection(backend):
    db = backend.make_db()
    with db.execution_context():
        first = backend.conn_id(db)
        with db.execution_context():
            second = backend.conn_id(db)
        assert backend.conn_id(db) == first
    assert first != second
    assert db.is_closed()
    assert db.pool_stats()['in_use'] == 0


def test_decorator_form_runs_each_call_in_a_context(backend):
    db = backend.make_db()
    Item = make_model(db, backend)

    @db.execution_context()
    def add(name):
        Item.create(name=name)
        return db.in_transaction()

    assert add('a') is True and add('b') is True
    assert db.is_closed()
    assert count_items(backend, db, Item) == 2


def test_thread_state_is_exactly_as_before(backend):
    db = backend.make_db()
    Item = make_model(db, backend)
    db.connect()
    conn = db.connection()
    with db.atomic() as txn:
        with db.execution_context():
            Item.create(name='inner')
            assert db.connection() is not conn
        assert db.connection() is conn
        assert db.in_transaction()
        Item.create(name='outer')      # SQLite: one writer, so write after
        txn.rollback()
    db.close()
    names = [i.name for i in Item.select()]
    assert names == ['inner']


def test_closed_thread_stays_closed_after_the_block(backend):
    db = backend.make_db()
    assert db.is_closed()
    with db.execution_context(with_transaction=False):
        assert not db.is_closed()
    assert db.is_closed()


def test_a_failed_commit_still_returns_the_connection(backend):
    db = backend.make_db(max_connections=1)
    # peewee's, or (peewee 3.17 with psycopg 3) the driver's IntegrityError.
    with pytest.raises(Exception) as info:
        with db.execution_context():
            db.execute_sql('CREATE TABLE %s_u (x INTEGER PRIMARY KEY)'
                           % backend.tag)
            db.execute_sql('INSERT INTO %s_u VALUES (1)' % backend.tag)
            db.execute_sql('INSERT INTO %s_u VALUES (1)' % backend.tag)
    assert 'IntegrityError' in [c.__name__ for c in type(info.value).__mro__]
    assert db.pool_stats()['in_use'] == 0
    with db.execution_context():
        assert db.execute_sql('SELECT 1').fetchone()[0] == 1


def test_one_context_object_shared_by_threads_keeps_them_apart(backend):
    db = backend.make_db(max_connections=4, timeout=10)
    shared = db.execution_context(with_transaction=False)
    both_inside = threading.Barrier(2)
    seen = []

    def use(_):
        with shared:
            conn = db.connection()
            both_inside.wait()
            seen.append(db.connection() is conn)
        return db.is_closed()

    assert run_threads(2, use) == [True, True]
    assert seen == [True, True]
    assert db.pool_stats()['in_use'] == 0
