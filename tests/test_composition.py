"""The mixin composes with any peewee database, as peewee's does:
``class P(PooledDatabase, SomeDatabase)`` by hand, with SQLite (sqlite3,
peewee 3's SqliteExtDatabase, APSW), a database whose connections are plain
objects, and the server databases."""
import functools
import itertools
import threading

import peewee
import pytest

import playhouse_pool as pp
from conftest import (MySQLBackend, Psycopg2Backend, SqliteBackend,
                      _backend, run_threads)

PEEWEE_MAJOR = int(peewee.__version__.split('.')[0])


class HandSqlite(pp.PooledDatabase, peewee.SqliteDatabase):
    """The composition peewee's own pool tests use."""


class HandPostgres(pp.PooledDatabase, peewee.PostgresqlDatabase):
    pass


class HandMySQL(pp.PooledDatabase, peewee.MySQLDatabase):
    pass


class Token:
    """A connection that is only an object: no DB-API at all."""
    __slots__ = ('number',)

    def __init__(self, number):
        self.number = number


class TokenDatabase(peewee.Database):
    """A database of the user's own whose connections are plain objects."""

    def __init__(self, *args, **kwargs):
        self.opened = itertools.count(1)
        self.closed = []
        super().__init__(*args, **kwargs)

    def _connect(self):
        return Token(next(self.opened))

    def _close(self, conn):
        self.closed.append(conn.number)


class HandTokens(pp.PooledDatabase, TokenDatabase):
    pass


class CountingSqlite(peewee.SqliteDatabase):
    """peewee's own tests' FakeDatabase: a SQLite class whose connections
    are numbers."""

    def __init__(self, *args, **kwargs):
        self.opened = itertools.count(1)
        super().__init__(*args, **kwargs)

    def _connect(self):
        return next(self.opened)

    def _close(self, conn):
        pass


class HandCounting(pp.PooledDatabase, CountingSqlite):
    pass


def _apsw_class():
    pytest.importorskip('apsw')
    from playhouse.apsw_ext import APSWDatabase

    class HandAPSW(pp.PooledDatabase, APSWDatabase):
        pass
    return HandAPSW


def _sqlite_ext_class():
    if PEEWEE_MAJOR >= 4:
        pytest.skip('peewee 4 has no SqliteExtDatabase (this is %s)'
                    % peewee.__version__)
    from playhouse.sqlite_ext import SqliteExtDatabase

    class HandSqliteExt(pp.PooledDatabase, SqliteExtDatabase):
        pass
    return HandSqliteExt


# id -> (the backend whose server it uses, the class: or a function
# returning it, for optional drivers)
SQL_COMPOSITIONS = {
    'sqlite': (SqliteBackend, HandSqlite),
    'sqlite_ext': (SqliteBackend, _sqlite_ext_class),
    'apsw': (SqliteBackend, _apsw_class),
    'postgres': (Psycopg2Backend, HandPostgres),
    'mysql': (MySQLBackend, HandMySQL),
}


@pytest.fixture(params=sorted(SQL_COMPOSITIONS))
def composed(request, tmp_path):
    """(backend, make_db): a hand-made composition on that backend."""
    backend_class, db_class = SQL_COMPOSITIONS[request.param]
    if not isinstance(db_class, type):
        db_class = db_class()
    for backend in _backend(backend_class, tmp_path):
        yield backend, functools.partial(backend.make_db, db_class)


def table(backend, db):
    name = backend.tag + '_t'
    with db.connection_context():
        db.execute_sql('CREATE TABLE %s (x INTEGER)' % name)
    return name


def test_one_thread_reuses_one_connection(composed):
    backend, make_db = composed
    db = make_db()
    for _ in range(20):
        db.connect()
        assert db.execute_sql('SELECT 1').fetchone()[0] == 1
        db.close()
    stats = db.pool_stats()
    assert (stats['created'], stats['open'], stats['checkouts']) == (1, 1, 20)


def test_eight_threads_share_the_connections_they_opened(composed):
    backend, make_db = composed
    db = make_db(max_connections=4, timeout=30)

    def requests(_):
        for _ in range(40):
            with db.connection_context():
                assert db.execute_sql('SELECT 1').fetchone()[0] == 1

    run_threads(8, requests)
    stats = db.pool_stats()
    assert stats['checkouts'] == 320
    assert 1 <= stats['created'] <= 4
    assert stats['closed'] == 0 and stats['in_use'] == 0


def test_an_open_transaction_is_rolled_back_at_checkin(composed):
    backend, make_db = composed
    db = make_db(max_connections=1)
    name = table(backend, db)
    db.connect()
    first = db.connection()
    db.execute_sql('BEGIN')          # raw SQL: peewee's stack knows nothing
    db.execute_sql('INSERT INTO %s VALUES (1)' % name)
    db.close()
    db.connect()
    assert db.connection() is first  # reused, not replaced
    assert db.execute_sql('SELECT COUNT(*) FROM %s' % name
                          ).fetchone()[0] == 0
    db.execute_sql('INSERT INTO %s VALUES (2)' % name)   # autocommit again
    db.close()
    assert db.pool_stats()['created'] == 1
    with db.connection_context():
        rows = db.execute_sql('SELECT x FROM %s' % name).fetchall()
        assert [tuple(row) for row in rows] == [(2,)]


def test_a_hand_made_composition_gets_its_familys_hooks():
    assert issubclass(HandPostgres, pp.PooledPostgresqlDatabase.__base__)
    assert issubclass(HandMySQL, pp.PooledMySQLDatabase.__base__)
    assert HandSqlite('x.db').connect_params['check_same_thread'] is False


def test_its_own_hooks_still_come_first(tmp_path):
    class NeverReused(pp.PooledDatabase, peewee.SqliteDatabase):
        def _can_reuse(self, conn):
            return False

    db = NeverReused(str(tmp_path / 'x.db'))
    seen = []
    for _ in range(3):
        with db.connection_context():
            seen.append(db.connection())
    assert len({id(conn) for conn in seen}) == 3
    assert db.pool_stats()['created'] >= 3


@pytest.mark.parametrize('db_class', [pp.PooledSqliteDatabase, HandSqlite])
def test_check_same_thread_true_is_refused_with_a_clear_error(db_class,
                                                              tmp_path):
    with pytest.raises(ValueError, match='check_same_thread=True cannot be '
                                         'pooled'):
        db_class(str(tmp_path / 'x.db'), check_same_thread=True)


def test_apsw_connections_are_not_given_check_same_thread(tmp_path):
    db = _apsw_class()(str(tmp_path / 'x.db'))
    assert 'check_same_thread' not in db.connect_params
    with db.connection_context():
        assert db.execute_sql('SELECT 1').fetchone()[0] == 1


# -- Connections that are plain objects ---------------------------------------

@pytest.mark.parametrize('db_class', [HandTokens, HandCounting],
                         ids=['database', 'sqlite_subclass'])
def test_plain_object_connections_are_reused_by_one_thread(db_class):
    db = db_class('plain')
    seen = set()
    for _ in range(10):
        db.connect()
        seen.add(id(db.connection()))
        db.close()
    assert len(seen) == 1
    stats = db.pool_stats()
    assert (stats['created'], stats['closed']) == (1, 0)


@pytest.mark.parametrize('db_class', [HandTokens, HandCounting],
                         ids=['database', 'sqlite_subclass'])
def test_plain_object_connections_are_shared_by_threads(db_class):
    db = db_class('plain', max_connections=5, timeout=30)
    all_in = threading.Barrier(5, timeout=10)

    def round_of_five(_):
        with db.connection_context():
            all_in.wait()            # five held at once

    for _ in range(5):
        run_threads(5, round_of_five)
    stats = db.pool_stats()
    assert (stats['created'], stats['closed'], stats['idle']) == (5, 0, 5)


# -- peewee's attributes ------------------------------------------------------

def test_peewees_pool_attributes_follow_the_options_and_init(tmp_path):
    db = HandSqlite(str(tmp_path / 'x.db'), max_connections=5,
                    stale_timeout=10, timeout=2)
    assert (db._max_connections, db._stale_timeout, db._wait_timeout) == (
        5, 10, 2)
    db.init(str(tmp_path / 'x.db'), max_connections=50, stale_timeout=100,
            timeout=20)
    assert (db._max_connections, db._stale_timeout, db._wait_timeout) == (
        50, 100, 20)
    db.init(str(tmp_path / 'x.db'), timeout=0)
    assert db._wait_timeout == float('inf')
    assert db._max_connections == db.pool_stats()['max_connections'] == 50


def test_peewees_pool_attributes_are_read_only(tmp_path):
    db = pp.PooledSqliteDatabase(str(tmp_path / 'x.db'))
    with pytest.raises(AttributeError):
        db._max_connections = 3
