"""No secret leaks, and (with reset_session) no session state leaks."""
import logging
import socket
import threading
import traceback

import pytest

import playhouse_pool as pp
from conftest import (MariaDBConnectorBackend, MySQLBackend,
                      MySQLConnectorBackend, MySQLdbBackend, Psycopg2Backend,
                      Psycopg3Backend, run_threads, settled, wait_until)

SECRET = 'hunter2-s3cret'
# Long enough that a refused connect is always retried (and the retry
# logged) even when the driver's first attempt is slow on a loaded machine:
# with 0.3 s, a slow first pymysql attempt left no room for a second one.
RETRY_WINDOW = 1.0


def closed_port():
    """A loopback port with nothing listening."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def all_text(caplog, errors):
    logs = [r.getMessage() + (r.exc_text or '') for r in caplog.records]
    for record in caplog.records:
        if record.exc_info:
            logs.extend(traceback.format_exception(*record.exc_info))
    for exc in errors:
        logs.extend(traceback.format_exception(type(exc), exc,
                                               exc.__traceback__))
    return '\n'.join(logs)


@pytest.mark.parametrize('make', [
    lambda port: pp.PooledPostgresqlDatabase(
        'test', host='127.0.0.1', port=port, user='u', password=SECRET,
        timeout=RETRY_WINDOW, leak_timeout=0.01),
    lambda port: pp.PooledPostgresqlDatabase(
        'postgresql://u:%s@127.0.0.1:%d/test' % (SECRET, port),
        timeout=RETRY_WINDOW),
    lambda port: pp.connect('postgresql+pool://u:%s@127.0.0.1:%d/test'
                            '?timeout=%s' % (SECRET, port, RETRY_WINDOW)),
    lambda port: pp.connect('mysql+pool://u:%s@127.0.0.1:%d/test'
                            '?timeout=%s' % (SECRET, port, RETRY_WINDOW)),
], ids=['keyword', 'dsn', 'postgres-url', 'mysql-url'])
def test_password_never_appears_in_logs_errors_repr_or_stats(make, caplog):
    caplog.set_level(logging.DEBUG)
    db = make(closed_port())
    errors = []
    with pytest.raises(Exception) as info:
        db.connect()
    errors.append(info.value)
    assert 'could not connect' in str(info.value)
    assert info.value.__cause__ is not None       # the driver's last error
    assert caplog.records, 'expected retry warnings'
    text = all_text(caplog, errors) + repr(db) + str(db.pool_stats())
    assert SECRET not in text


# Trust authentication on the test server accepts any password.
@pytest.mark.parametrize('server_backend', [Psycopg2Backend], indirect=True)
def test_password_absent_from_leak_and_reclaim_warnings(server_backend,
                                                        caplog):
    caplog.set_level(logging.DEBUG)
    db = server_backend.make_db(password=SECRET, leak_timeout=0.01,
                         max_connections=1)
    run_threads(1, lambda _: db.connect())       # dies holding it
    db.connect()                                 # reclaims it
    wait_until(lambda: 'leak_timeout' in all_text(caplog, []),
               what='the leak warning')
    db.close()
    messages = all_text(caplog, [])
    assert 'Reclaimed' in messages and 'leak_timeout' in messages
    assert SECRET not in messages


def test_without_timeout_the_first_connect_error_surfaces_at_once(caplog):
    caplog.set_level(logging.DEBUG, logger='playhouse_pool')
    db = pp.PooledPostgresqlDatabase('test', host='127.0.0.1',
                                     port=closed_port(), user='u')
    with pytest.raises(Exception) as info:
        db.connect()
    assert 'could not connect' not in str(info.value)    # no retries
    assert not [r for r in caplog.records if 'retrying' in r.getMessage()]
    assert db.pool_stats()['open'] == 0 and db._reserved == 0


# -- reset_session -----------------------------------------------------------

PG_STATE = {
    # name: (set it, read it back -> value when set / when reset)
    'role': ("SET ROLE {role}", "SELECT current_user", '{role}', 'postgres'),
    'search_path': ("SET search_path TO {tag}, public", "SHOW search_path",
                    '{tag}, public', '"$user", public'),
    'rls_variable': ("SELECT set_config('app.tenant', '42', false)",
                     "SELECT current_setting('app.tenant', true)", '42',
                     (None, '')),
    'temp_table': ("CREATE TEMP TABLE {tag}_t (x int)",
                   "SELECT count(*) FROM pg_tables WHERE tablename = "
                   "'{tag}_t'", 1, 0),
    'advisory_lock': ("SELECT pg_advisory_lock(4242)",
                      "SELECT count(*) FROM pg_locks WHERE locktype = "
                      "'advisory' AND objid = 4242 AND pid = "
                      "pg_backend_pid()", 1, 0),
    'listen': ("LISTEN {tag}_chan",
               "SELECT count(*) FROM pg_listening_channels()", 1, 0),
}

MYSQL_STATE = {
    'user_variable': ("SET @tenant = 42", "SELECT @tenant", 42, None),
    'session_variable': ("SET SESSION wait_timeout = 77",
                         "SELECT @@session.wait_timeout", 77, 28800),
    # CHECKSUM TABLE answers NULL, not an error, for a missing table.
    'temp_table': ("CREATE TEMPORARY TABLE {tag}_t (x int)",
                   "CHECKSUM TABLE {tag}_t", 0, None),
    'named_lock': ("SELECT GET_LOCK('{tag}', 0)",
                   "SELECT IS_USED_LOCK('{tag}') IS NOT NULL", 1, 0),
}


MYSQL_BACKENDS = [MySQLBackend, MySQLdbBackend, MySQLConnectorBackend,
                  MariaDBConnectorBackend]


def session_cases():
    for cls in (Psycopg2Backend, Psycopg3Backend):
        for name in PG_STATE:
            yield pytest.param(cls, name, id='%s-%s' % (cls.name, name))
    for cls in MYSQL_BACKENDS:
        for name in MYSQL_STATE:
            yield pytest.param(cls, name, id='%s-%s' % (cls.name, name))


@pytest.fixture
def pg_role(server_backend):
    role = server_backend.tag + '_role'
    server_backend.admin_query('CREATE ROLE %s' % role)
    yield role
    server_backend.admin_query('DROP ROLE IF EXISTS %s' % role)


@pytest.mark.parametrize('server_backend, name', list(session_cases()),
                         indirect=['server_backend'])
def test_reset_session_clears_state_between_checkouts(server_backend, name,
                                                      request):
    cases = PG_STATE if server_backend.server == 'postgres' else MYSQL_STATE
    set_sql, read_sql, when_set, when_reset = cases[name]
    fmt = {'tag': server_backend.tag}
    if name == 'role':
        fmt['role'] = request.getfixturevalue('pg_role')
    set_sql, read_sql = set_sql.format(**fmt), read_sql.format(**fmt)
    if isinstance(when_set, str):
        when_set = when_set.format(**fmt)

    def read(db):
        return db.execute_sql(read_sql).fetchone()[-1]

    db = server_backend.make_db(max_connections=1, reset_session=True)
    with db.connection_context():
        first = server_backend.conn_id(db)
        db.execute_sql(set_sql)
        assert read(db) == when_set
    with db.connection_context():
        assert server_backend.conn_id(db) == first   # reset, not reconnect
        value = read(db)
    assert value in (when_reset if isinstance(when_reset, tuple)
                     else (when_reset,))

    plain = server_backend.make_db(max_connections=1)   # the default
    with plain.connection_context():
        plain.execute_sql(set_sql)
    with plain.connection_context():
        assert read(plain) == when_set


def test_reset_session_on_sqlite_gives_a_fresh_connection(tmp_path):
    db = pp.PooledSqliteDatabase(str(tmp_path / 'r.db'), reset_session=True)
    with db.connection_context():
        first = db.connection()
        db.execute_sql('CREATE TEMP TABLE t (x int)')
    with db.connection_context():
        assert db.connection() is not first
        assert db.execute_sql(
            "SELECT count(*) FROM sqlite_temp_master").fetchone()[0] == 0
    # Each check-in's connection is closed and replaced, by a worker.
    settled(db)
    stats = db.pool_stats()
    assert (stats['open'], stats['closed'], stats['created']) == (1, 2, 3)


def test_reset_session_runs_outside_the_pool_lock(server_backend):
    db = server_backend.make_db(max_connections=2, reset_session=True)
    seen = []
    original = db._can_reuse

    def spy(conn):
        seen.append(db._pool_lock._is_owned())
        return original(conn)

    db._can_reuse = spy
    with db.connection_context():
        pass
    assert seen == [False]


@pytest.mark.parametrize('server_backend', MYSQL_BACKENDS, indirect=True)
def test_mysql_reset_session_keeps_what_was_set_at_connect(server_backend):
    # peewee drops sql_mode for MariaDB Connector/Python (no such keyword).
    takes_sql_mode = server_backend.name != 'mariadbconnector'
    params = {'sql_mode': 'ANSI_QUOTES'} if takes_sql_mode else {}
    db = server_backend.make_db(max_connections=1, reset_session=True,
                                init_command="SET @pp_init = 'yes'",
                                **params)
    for _ in range(2):
        with db.connection_context():
            mode, init, autocommit = db.execute_sql(
                'SELECT @@SESSION.sql_mode, @pp_init, @@autocommit'
            ).fetchone()
            assert init == 'yes' and autocommit == 1
            if takes_sql_mode:
                assert mode == 'ANSI_QUOTES'
            db.execute_sql("SET @pp_init = 'changed'")
            db.execute_sql('SET autocommit = 0')
    assert db.pool_stats()['created'] == 1


@pytest.mark.parametrize('server_backend', [Psycopg3Backend], indirect=True)
@pytest.mark.parametrize('prepare_threshold', [5, 0])
def test_reset_session_keeps_the_drivers_prepared_statements_usable(
        server_backend, prepare_threshold):
    """psycopg 3 prepares a query run often enough (0: every query) and
    caches its name: the reset must not deallocate it behind the driver's
    back, nor be prepared itself."""
    db = server_backend.make_db(max_connections=1, reset_session=True,
                                prepare_threshold=prepare_threshold)
    for i in range(20):
        with db.connection_context():
            assert db.execute_sql('SELECT %s::int', (i,)).fetchone()[0] == i
            prepared = db.execute_sql(
                'SELECT count(*) FROM pg_prepared_statements').fetchone()[0]
    assert prepared >= 1                 # it did prepare: the case is real
    stats = db.pool_stats()
    assert (stats['created'], stats['checkouts']) == (1, 20)


@pytest.mark.parametrize('server_backend', [Psycopg2Backend], indirect=True)
def test_reset_session_keeps_what_the_driver_set_when_connecting(
        server_backend):
    """psycopg2 SETs client_encoding for encoding=...: a reset that lost it
    would have the server read the driver's LATIN1 bytes as UTF8."""
    db = server_backend.make_db(max_connections=1, reset_session=True,
                                encoding='LATIN1')
    read = ("SELECT current_setting('client_encoding'), "
            "current_setting('client_min_messages'), length(%s)")
    word = '\u00e9t\u00e9'                 # 3 characters, 3 bytes in LATIN1
    with db.connection_context():
        db.execute_sql("SET client_min_messages TO 'error'")
        assert db.execute_sql(read, (word,)).fetchone() == (
            'LATIN1', 'error', 3)
    with db.connection_context():
        # What the checkout SET is gone; what the driver SET stays.
        assert db.execute_sql(read, (word,)).fetchone() == (
            'LATIN1', 'notice', 3)
    assert db.pool_stats()['created'] == 1


SESSION_VARIABLE = {
    # server: (set it, read it back)
    'postgres': ("SELECT set_config('app.tenant', '42', false)",
                 "SELECT current_setting('app.tenant', true)"),
    'mysql': ("SET @tenant = '42'", "SELECT @tenant"),
}


def test_reset_session_turned_on_by_init_leaves_no_earlier_state(
        server_backend):
    """Connections checked in before init() turned reset_session on, and
    one checked out across it, were not reset then: none of them is handed
    out again with what was set on it."""
    set_sql, read_sql = SESSION_VARIABLE[server_backend.server]
    db = server_backend.make_db(max_connections=3, timeout=10)
    opened = threading.Barrier(2)

    def set_then_idle(_):
        with db.connection_context():
            db.execute_sql(set_sql)
            opened.wait(10)              # two connections, both left idle

    run_threads(2, set_then_idle)
    holding, done = threading.Event(), threading.Event()

    def set_and_hold():
        with db.connection_context():
            db.execute_sql(set_sql)
            holding.set()
            done.wait(10)                # checked out across the init()

    holder = threading.Thread(target=set_and_hold)
    holder.start()
    assert holding.wait(10)
    db.init(db.database, **dict(db.connect_params, reset_session=True))
    done.set()
    holder.join(10)
    at_once = threading.Barrier(3)

    def read(_):
        with db.connection_context():
            at_once.wait(10)             # three connections in use at once
            return db.execute_sql(read_sql).fetchone()[0]

    assert set(run_threads(3, read)) <= {None, ''}
