"""Every pooled class peewee ships, on each driver: what the backend-wide
tests cannot say (which driver ran, peewee's own class list, mysqlclient
without pymysql, ReconnectMixin, CockroachDB's hooks, the plain mixin)."""
import importlib
import json
import subprocess
import sys
import textwrap

import peewee
import pytest
from playhouse.shortcuts import ReconnectMixin

import playhouse_pool as pp
from playhouse_pool import _compat
from conftest import (DATABASE_ERRORS, MYSQL_URL, MariaDBConnectorBackend,
                      MySQLBackend, MySQLConnectorBackend, MySQLdbBackend,
                      Psycopg2Backend, Psycopg3Backend, _require, settled,
                      _url_kwargs)

PEEWEE_MODULES = ['playhouse.pool', 'playhouse.postgres_ext',
                  'playhouse.mysql_ext', 'playhouse.cockroachdb',
                  'playhouse.cysqlite_ext']


def peewee_pooled_classes():
    names = set()
    for module in PEEWEE_MODULES:
        try:
            found = importlib.import_module(module)
        except ImportError:      # cysqlite_ext: peewee 3, or no cysqlite
            continue
        # A name bound to None: peewee lacks that driver here.
        names.update(n for n in dir(found) if n.startswith('Pooled')
                     and n.endswith('Database') and getattr(found, n))
    return sorted(names)


def test_every_pooled_class_peewee_ships_is_exported_under_its_name():
    ours = set(pp.__all__)
    assert [n for n in peewee_pooled_classes() if n not in ours] == []
    for name in ('PooledMySQLConnectorDatabase',
                 'PooledMariaDBConnectorDatabase', 'PooledCySqliteDatabase',
                 'PooledCockroachDatabase'):
        assert issubclass(getattr(pp, name), pp.PooledDatabase)


@pytest.mark.parametrize('server_backend, package', [
    (MySQLBackend, 'pymysql'), (MySQLdbBackend, 'MySQLdb'),
    (MySQLConnectorBackend, 'mysql'), (MariaDBConnectorBackend, 'mariadb')],
    indirect=['server_backend'], ids=lambda v: getattr(v, 'name', v))
def test_each_mysql_backend_runs_on_its_own_driver(server_backend, package):
    db = server_backend.make_db()
    with db.connection_context():
        module = type(db.connection()).__module__
    assert module.partition('.')[0] == package


def test_a_class_peewee_lacks_raises_when_built_not_at_import(tmp_path):
    stand_in = _compat._unavailable(peewee.SqliteDatabase, 'CySqliteDatabase',
                                    'it needs peewee 4')
    pooled = type('PooledX', (pp.PooledDatabase, stand_in), {})
    with pytest.raises(peewee.ImproperlyConfigured,
                       match='PooledX is not available: it needs peewee 4'):
        pooled(str(tmp_path / 'x.db'))
    try:
        importlib.import_module('playhouse.cysqlite_ext')
    except ImportError:                  # peewee 3, or cysqlite missing
        with pytest.raises(peewee.ImproperlyConfigured, match='cysqlite'):
            pp.PooledCySqliteDatabase(str(tmp_path / 'x.db'))


def test_csqlite_ext_class_pools_where_peewee_has_it(tmp_path):
    """peewee 3's C-accelerated SqliteExtDatabase (sqlite3 underneath)."""
    try:
        db = pp.PooledCSqliteExtDatabase(str(tmp_path / 'c.db'))
    except peewee.ImproperlyConfigured as exc:         # peewee 4
        assert 'C extension' in str(exc)
        return
    with db.connection_context():
        first = db.connection()
        db.execute_sql('BEGIN')
    with db.connection_context():
        assert db.connection() is first and not first.in_transaction


MYSQLCLIENT_ONLY = textwrap.dedent('''
    import json, sys
    sys.modules['pymysql'] = None          # as if it were not installed
    import peewee
    from playhouse_pool import PooledMySQLDatabase
    params = json.loads(sys.argv[1])
    db = PooledMySQLDatabase(params.pop('database'), max_connections=2,
                             reset_session=True, **params)
    ids = []
    for _ in range(5):
        with db.connection_context():
            ids.append(db.execute_sql('SELECT CONNECTION_ID()').fetchone()[0])
            db.execute_sql('BEGIN')
            db.execute_sql('SET @left_behind = 1')
    with db.connection_context():
        row = db.execute_sql('SELECT @@in_transaction, @left_behind, '
                             'CONNECTION_ID()').fetchone()
    print(json.dumps({'driver': peewee.mysql.__name__, 'ids': ids,
                      'after': list(row), 'stats': db.pool_stats()}))
''')


@pytest.mark.server
def test_mysqlclient_alone_pools_rolls_back_and_resets(tmp_path):
    """peewee imported where pymysql cannot be: it picks MySQLdb, and
    PooledMySQLDatabase pools on it fully."""
    _require(MySQLdbBackend)
    params = _url_kwargs(MYSQL_URL)
    out = subprocess.run(
        [sys.executable, '-c', MYSQLCLIENT_ONLY, json.dumps(params)],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result['driver'] == 'MySQLdb'
    assert len(set(result['ids'])) == 1              # one connection, reused
    # No transaction and no variable survive a check-in; same connection.
    assert result['after'] == [0, None, result['ids'][0]]
    stats = result['stats']
    assert (stats['created'], stats['closed'], stats['open']) == (1, 0, 1)


# -- ReconnectMixin ----------------------------------------------------------

PG_RECONNECT_ERRORS = ReconnectMixin.reconnect_errors + (
    (peewee.OperationalError, 'terminating connection'),
    (peewee.OperationalError, 'server closed the connection'),
    (peewee.InterfaceError, 'connection already closed'),
    (peewee.OperationalError, 'the connection is closed'),
)


def reconnecting(server_backend):
    """The backend's class under peewee's ReconnectMixin (with the
    Postgres errors that peewee's list leaves commented out)."""
    attrs = {}
    if server_backend.server == 'postgres':
        attrs['reconnect_errors'] = PG_RECONNECT_ERRORS
    server_backend.db_class = type(
        'Reconnecting' + server_backend.db_class.__name__,
        (ReconnectMixin, server_backend.db_class), attrs)
    return server_backend.make_db(max_connections=2)


@pytest.mark.parametrize('server_backend', [
    MySQLBackend, MySQLdbBackend, Psycopg2Backend, Psycopg3Backend],
    indirect=True)
def test_reconnect_mixin_replaces_a_connection_killed_while_checked_out(
        server_backend):
    """The request style ReconnectMixin is made for: connect() ... close().
    (Inside connection_context() the mixin's close() and connect() empty
    peewee's context stack, with peewee's own databases too.)"""
    db = reconnecting(server_backend)
    db.connect()
    victim = server_backend.conn_id(db)
    server_backend.kill(victim)
    # The statement fails on the dead connection; the mixin checks it in
    # (the pool closes it: the driver marked it dead) and out again (a new
    # one), and runs the statement again.
    assert db.execute_sql('SELECT 1').fetchone()[0] == 1
    replacement = server_backend.conn_id(db)
    assert replacement != victim
    assert server_backend.server_ids() == {replacement}
    stats = db.pool_stats()
    assert (stats['open'], stats['in_use'], stats['closed']) == (1, 1, 1)
    db.close()
    assert db.pool_stats()['open'] == len(server_backend.server_ids()) == 1


@pytest.mark.parametrize('server_backend', [MySQLBackend, Psycopg2Backend],
                         indirect=True)
def test_reconnect_mixin_does_not_replace_inside_a_transaction(
        server_backend):
    db = reconnecting(server_backend)
    db.connect()
    with pytest.raises(DATABASE_ERRORS):
        with db.atomic():
            victim = server_backend.conn_id(db)
            server_backend.kill(victim)
            db.execute_sql('SELECT 1')
    db.close()
    settled(db)            # a worker closed it and opened its replacement
    stats = db.pool_stats()
    assert (stats['open'], stats['closed']) == (1, 1)
    ids = server_backend.server_ids()
    assert len(ids) == 1 and victim not in ids


# -- CockroachDB: its hooks, on a psycopg2 connection to Postgres -----------

@pytest.fixture
def cockroach_on_postgres(server_backend):
    """PooledCockroachDatabase talks to the test Postgres (no CockroachDB
    server here): the pool's hooks are what is tested, not CockroachDB."""
    server_backend.db_class = pp.PooledCockroachDatabase
    return server_backend


@pytest.mark.parametrize('server_backend', [Psycopg2Backend], indirect=True)
def test_cockroach_hooks_reuse_roll_back_and_skip_a_killed_connection(
        cockroach_on_postgres):
    backend = cockroach_on_postgres
    db = backend.make_db(max_connections=2)
    with db.connection_context():
        first = backend.conn_id(db)
        db.execute_sql('BEGIN')
    with db.connection_context():
        assert backend.conn_id(db) == first
        assert db.connection().get_transaction_status() == 0   # idle
    backend.kill(first)
    with db.connection_context():
        assert backend.conn_id(db) != first
    stats = db.pool_stats()
    assert (stats['open'], stats['created'], stats['closed']) == (1, 2, 1)


@pytest.mark.parametrize('server_backend', [Psycopg2Backend], indirect=True)
def test_cockroach_reset_session_discards_all(cockroach_on_postgres):
    backend = cockroach_on_postgres
    db = backend.make_db(max_connections=1, reset_session=True)
    with db.connection_context():
        first = backend.conn_id(db)
        db.execute_sql("SELECT set_config('app.tenant', '42', false)")
    with db.connection_context():
        assert backend.conn_id(db) == first
        assert db.execute_sql("SELECT current_setting('app.tenant', true)"
                              ).fetchone()[0] in (None, '')


def test_cockroach_class_validates_the_pools_keywords():
    with pytest.raises(ValueError, match='max_connections'):
        pp.PooledCockroachDatabase('app', max_connections=-1)
    db = pp.PooledCockroachDatabase('app', host='h', max_connections=3)
    assert db.connect_params['port'] == 26257            # CockroachDB's
    assert db.pool_stats()['max_connections'] == 3


# -- The plain mixin ---------------------------------------------------------

class PlainSqlite(pp.PooledDatabase, peewee.SqliteDatabase):
    """The mixin on a database this package has no class for (pooled
    sqlite3 connections are opened on pool workers and used by other
    threads: check_same_thread=False, as PooledSqliteDatabase sets)."""


def test_plain_mixin_rolls_back_at_checkin_through_the_dbapi(tmp_path):
    db = PlainSqlite(str(tmp_path / 'p.db'), check_same_thread=False)
    with db.connection_context():
        db.execute_sql('CREATE TABLE t (x int)')
    with db.connection_context():
        first = db.connection()
        db.execute_sql('BEGIN')
        db.execute_sql('INSERT INTO t VALUES (1)')
    with db.connection_context():
        assert db.connection() is first                    # reused
        assert not first.in_transaction
        assert db.execute_sql('SELECT count(*) FROM t').fetchone()[0] == 0


def test_plain_mixin_with_reset_session_does_not_reuse(tmp_path):
    db = PlainSqlite(str(tmp_path / 'p.db'), reset_session=True,
                     check_same_thread=False)
    seen = []
    for _ in range(2):
        with db.connection_context():
            seen.append(db.connection())
    assert seen[0] is not seen[1]
    settled(db)            # each check-in's connection closed and replaced
    stats = db.pool_stats()
    assert (stats['created'], stats['closed'], stats['open']) == (3, 2, 1)
