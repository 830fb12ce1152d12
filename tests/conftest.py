"""Real servers for the tests, one parametrized ``backend`` fixture.

Server addresses come from PLAYHOUSE_POOL_TEST_POSTGRES and
PLAYHOUSE_POOL_TEST_MYSQL. An unreachable server, a driver not installed
(mysqlclient and MariaDB Connector/Python are in the test-drivers extra, not
in test) or a missing ``pgbouncer`` binary skips its tests, unless
PLAYHOUSE_POOL_REQUIRE names it (servers ``postgres``, ``mysql``,
``pgbouncer``; drivers by backend name, ``mysqlclient``, ``mysqlconnector``,
``mariadbconnector``, ``cysqlite``): then they fail. The run ends with one
line per reason for skipping.
"""
import collections
import contextlib
import importlib
import os
import threading
import time
import uuid
from typing import Any, Callable, Dict, Iterator, List, Optional
from urllib.parse import urlparse

import peewee
import pytest

import playhouse_pool as pp
from playhouse_pool._redact import redact
from playhouse_pool.benchmark.proxy import LatencyProxy

POSTGRES_URL = os.environ.get('PLAYHOUSE_POOL_TEST_POSTGRES',
                              'postgresql://postgres@127.0.0.1:5432/test')
MYSQL_URL = os.environ.get('PLAYHOUSE_POOL_TEST_MYSQL',
                           'mysql://root@127.0.0.1:3306/test')
REQUIRED = {name.strip() for name in
            os.environ.get('PLAYHOUSE_POOL_REQUIRE', '').split(',')
            if name.strip()}


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0,
               what: str = 'condition') -> Any:
    """Wait for a condition the test cannot be signalled about (the server's
    view, another thread's progress). Fails the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail('timed out waiting for %s' % what)
        time.sleep(0.005)


def settled(db: Any) -> None:
    """Wait until the pool's workers have finished what they were given
    (connects, closes, pings under way), so the counts are final."""
    wait_until(lambda: db._reserved == 0, what='the pool workers to finish')


def housekeep(db: Any) -> None:
    """One round of the pool's housekeeper, now, on this thread."""
    db._lender.housekeeping.run_round(time.monotonic())


def idle_records(db: Any) -> List[Any]:
    """The pool's records of its idle connections (oldest first)."""
    return sorted(db._ledger.idle, key=lambda record: record.opened)


def age(record: Any, seconds: float) -> None:
    """Make a pooled connection ``seconds`` older, instead of sleeping."""
    record.opened -= seconds
    record.expires -= seconds


def _url_kwargs(url: str) -> Dict[str, Any]:
    parsed = urlparse(url)
    kwargs: Dict[str, Any] = {'host': parsed.hostname or '127.0.0.1'}
    if parsed.port:
        kwargs['port'] = parsed.port
    if parsed.username:
        kwargs['user'] = parsed.username
    if parsed.password:
        kwargs['password'] = parsed.password
    kwargs['database'] = parsed.path.lstrip('/')
    return kwargs


class ServerAdmin:
    """The test's own connection to a server, apart from the pools under
    test, and what it sees of their connections: those of this test are
    told apart by ``tag`` (Postgres: the application name; MySQL: a
    database of their own)."""
    tag = ''
    _admin: Optional[Any]
    _admin_lock: Any           # the admin connection is shared by threads

    @property
    def admin(self) -> Any:
        raise NotImplementedError

    def admin_query(self, sql: str, params: tuple = ()) -> List[tuple]:
        with self._admin_lock:
            cursor = self.admin.cursor()
            cursor.execute(sql, params)
            return list(cursor.fetchall()) if cursor.description else []

    def server_ids(self) -> set:
        """Ids of the server's connections opened by this test's pools."""
        raise NotImplementedError

    def kill_now(self, conn_id: int) -> None:
        """Terminate a connection server-side without waiting: when this
        returns, the server may not have acted on it yet (Postgres'
        pg_terminate_backend only signals the backend)."""
        raise NotImplementedError

    def last_activity(self, conn_id: int) -> Any:
        """Something the server changes whenever the connection runs a
        statement (to prove a checkout sent nothing)."""
        raise NotImplementedError

    def _drop(self) -> None:
        """Remove what the test made on the server (after its pools)."""


class PostgresAdmin(ServerAdmin):
    @property
    def admin(self) -> Any:
        if self._admin is None:
            import psycopg2
            params = _url_kwargs(POSTGRES_URL)
            self._admin = psycopg2.connect(dbname=params.pop('database'),
                                           **params)
            self._admin.autocommit = True
        return self._admin

    def server_ids(self) -> set:
        return {row[0] for row in self.admin_query(
            'SELECT pid FROM pg_stat_activity WHERE application_name = %s',
            (self.tag,))}

    def kill_now(self, conn_id: int) -> None:
        self.admin_query('SELECT pg_terminate_backend(%s)', (conn_id,))

    def last_activity(self, conn_id: int) -> Any:
        return self.admin_query(
            'SELECT state_change, query FROM pg_stat_activity '
            'WHERE pid = %s', (conn_id,))


class MySQLAdmin(ServerAdmin):
    @property
    def admin(self) -> Any:
        # The test's own view of the server, whatever driver the pool uses.
        if self._admin is None:
            import pymysql
            params = _url_kwargs(MYSQL_URL)
            self._admin = pymysql.connect(database=params.pop('database'),
                                          autocommit=True, **params)
        return self._admin

    def server_ids(self) -> set:
        return {row[0] for row in self.admin_query(
            'SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s',
            (self.tag,))}

    def kill_now(self, conn_id: int) -> None:
        self.admin_query('KILL %s', (conn_id,))

    def last_activity(self, conn_id: int) -> Any:
        return self.admin_query(
            'SELECT QUERY_ID, TIME_MS FROM information_schema.PROCESSLIST '
            'WHERE ID = %s', (conn_id,))[0][0]

    def create_database(self) -> None:
        """A database of this test's own: the process list's DB column
        then tells its connections apart from everyone else's."""
        self.admin_query('CREATE DATABASE IF NOT EXISTS %s' % self.tag)

    def _drop(self) -> None:
        self.admin_query('DROP DATABASE IF EXISTS %s' % self.tag)


class Backend(ServerAdmin):
    """What a test needs to know about one server and driver."""
    name = ''          # the test id; PLAYHOUSE_POOL_REQUIRE may name it
    server = ''        # 'postgres', 'mysql' or 'sqlite'
    kills = True       # the server can terminate a connection
    driver = ''        # a module that must import (beyond the test extra)
    install = "pip install -e '.[test]'"        # how to get that module
    needs_peewee = 3   # the oldest peewee major version with the class

    def __init__(self, tmp_path: Any) -> None:
        self.tmp_path = tmp_path
        self.tag = 'pp_%s' % uuid.uuid4().hex[:10]
        self._admin: Optional[Any] = None
        # The admin connection is shared by a test's threads; drivers'
        # connections are not thread-safe.
        self._admin_lock = threading.Lock()
        self._dbs: List[Any] = []

    # Databases
    def make_db(self, db_class: Any = None, **kwargs: Any) -> Any:
        """A pooled database of this backend (of ``db_class``, a subclass
        of its class, if given), closed at the end of the test."""
        db = self._make_db(db_class or self.db_class, **kwargs)
        self._dbs.append(db)
        return db

    def _make_db(self, db_class: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        for db in self._dbs:
            try:
                db.close_all()
            except Exception:
                pass
        self._drop()
        if self._admin is not None:
            self._admin.close()

    # The server's view
    def conn_id(self, db: Any) -> int:
        """The server's id for this thread's connection of ``db``."""
        raise NotImplementedError

    def local_id(self, db: Any) -> int:
        """The same id, as the driver learned it when it connected: no
        statement is sent (the checkout's first stays to come)."""
        raise NotImplementedError

    def kill(self, conn_id: int) -> None:
        """Terminate a connection server-side and wait until it is gone."""
        raise NotImplementedError


class PostgresBackend(PostgresAdmin, Backend):
    server = 'postgres'

    def _make_db(self, db_class: Any, **kwargs: Any) -> Any:
        params = _url_kwargs(POSTGRES_URL)
        params.update(kwargs)
        params.setdefault('application_name', self.tag)
        return db_class(params.pop('database'), **params)

    def conn_id(self, db: Any) -> int:
        return db.execute_sql('SELECT pg_backend_pid()').fetchone()[0]

    def local_id(self, db: Any) -> int:
        conn = db._state.conn
        if hasattr(conn, 'pgconn'):                     # psycopg 3
            return conn.info.backend_pid
        return conn.get_backend_pid()

    def kill(self, conn_id: int) -> None:
        self.kill_now(conn_id)
        wait_until(lambda: not self.admin_query(
            'SELECT 1 FROM pg_stat_activity WHERE pid = %s', (conn_id,)),
            what='backend %d to exit' % conn_id)


class Psycopg2Backend(PostgresBackend):
    name = 'psycopg2'
    db_class = pp.PooledPostgresqlExtDatabase


class Psycopg3Backend(PostgresBackend):
    name = 'psycopg3'
    db_class = pp.PooledPsycopg3Database


class MySQLBackend(MySQLAdmin, Backend):
    """MariaDB/MySQL through pymysql (peewee's first choice)."""
    name = 'mysql'
    server = 'mysql'
    db_class = pp.PooledMySQLDatabase
    # pymysql builds an SSL context per connect (~25 ms of CPU holding the
    # GIL); the loopback test server gains nothing from it.
    driver_params: Dict[str, Any] = {'ssl_disabled': True}

    def _make_db(self, db_class: Any, **kwargs: Any) -> Any:
        self.create_database()
        params = _url_kwargs(MYSQL_URL)
        params.update(self.driver_params)
        params.update(kwargs)
        params['database'] = self.tag
        return db_class(params.pop('database'), **params)

    def _drop(self) -> None:
        if self._dbs:
            super()._drop()

    def conn_id(self, db: Any) -> int:
        return db.execute_sql('SELECT CONNECTION_ID()').fetchone()[0]

    def local_id(self, db: Any) -> int:
        return db._state.conn.thread_id()

    def kill(self, conn_id: int) -> None:
        self.kill_now(conn_id)
        wait_until(lambda: not self.admin_query(
            'SELECT 1 FROM information_schema.PROCESSLIST WHERE ID = %s',
            (conn_id,)), what='connection %d to end' % conn_id)


# The drivers that build from source, left out of the test extra.
DRIVERS_FROM_SOURCE = ("pip install -e '.[test-drivers]', which builds "
                       "against the MariaDB client headers (Debian: apt-get "
                       "install libmariadb-dev pkg-config)")


class MySQLdbBackend(MySQLBackend):
    """mysqlclient, as on a machine without pymysql: for the test, peewee's
    MySQL driver (the module it picked at import, ``peewee.mysql``) is
    MySQLdb, so PooledMySQLDatabase connects through it. (A subprocess
    test, test_drivers.py, imports peewee with pymysql hidden.)"""
    name = 'mysqlclient'
    driver = 'MySQLdb'
    install = DRIVERS_FROM_SOURCE
    driver_params: Dict[str, Any] = {}

    def __init__(self, tmp_path: Any) -> None:
        super().__init__(tmp_path)
        self._peewee_driver = peewee.mysql       # type: ignore[attr-defined]
        peewee.mysql = importlib.import_module('MySQLdb')  # type: ignore

    def close(self) -> None:
        try:
            super().close()
        finally:
            peewee.mysql = self._peewee_driver   # type: ignore[attr-defined]


class MySQLConnectorBackend(MySQLBackend):
    name = 'mysqlconnector'
    driver = 'mysql.connector'
    db_class = pp.PooledMySQLConnectorDatabase


class MariaDBConnectorBackend(MySQLBackend):
    name = 'mariadbconnector'
    driver = 'mariadb'
    install = DRIVERS_FROM_SOURCE
    db_class = pp.PooledMariaDBConnectorDatabase
    driver_params: Dict[str, Any] = {}


class SqliteBackend(Backend):
    name = 'sqlite'
    server = 'sqlite'
    kills = False
    db_class: Any = pp.PooledSqliteDatabase

    def _make_db(self, db_class: Any, **kwargs: Any) -> Any:
        return db_class(str(self.tmp_path / 'test.db'), **kwargs)

    def conn_id(self, db: Any) -> int:
        return id(db.connection())


class CySqliteBackend(SqliteBackend):
    name = 'cysqlite'
    driver = 'cysqlite'
    db_class = pp.PooledCySqliteDatabase
    # peewee 3 has no cysqlite_ext: nothing to test there.
    needs_peewee = 4


def _database_errors() -> tuple:
    # peewee's InterfaceError (connection closed) is not a DatabaseError.
    errors: List[type] = [peewee.DatabaseError, peewee.InterfaceError]
    for module in ('psycopg', 'psycopg2', 'pymysql', 'MySQLdb',
                   'mysql.connector', 'mariadb', 'cysqlite'):
        try:
            errors.append(importlib.import_module(module).Error)
        except ImportError:
            pass
    return tuple(errors)


# A database error as the application sees it: peewee's, or the driver's
# where peewee passes it through (peewee 3.17 with psycopg 3).
DATABASE_ERRORS = _database_errors()

_reachable: Dict[str, Optional[str]] = {}


def _unreachable_reason(server: str) -> Optional[str]:
    """None if the server answers, else why not (checked once per run)."""
    if server not in _reachable:
        try:
            if server == 'postgres':
                db = peewee.PostgresqlDatabase(**_url_kwargs(POSTGRES_URL))
            else:
                db = peewee.MySQLDatabase(**_url_kwargs(MYSQL_URL))
            db.connect()
            db.close()
            _reachable[server] = None
        except Exception as exc:
            url, variable = ((POSTGRES_URL, 'PLAYHOUSE_POOL_TEST_POSTGRES')
                             if server == 'postgres' else
                             (MYSQL_URL, 'PLAYHOUSE_POOL_TEST_MYSQL'))
            _reachable[server] = '%s server unreachable at %s (%s): %s' % (
                server, redact(url), variable, ' '.join(str(exc).split()))
    return _reachable[server]


SERVER_BACKENDS = [Psycopg2Backend, Psycopg3Backend, MySQLBackend,
                   MySQLdbBackend, MySQLConnectorBackend,
                   MariaDBConnectorBackend]
BACKENDS = [SqliteBackend, CySqliteBackend] + SERVER_BACKENDS
_PEEWEE_MAJOR = int(peewee.__version__.split('.')[0])
# What PLAYHOUSE_POOL_REQUIRE may name: the servers (and PgBouncer), and
# each backend by its name, for its driver.
REQUIRABLE = {'postgres', 'mysql', 'pgbouncer'} | {b.name for b in BACKENDS}


def pytest_configure(config: Any) -> None:
    unknown = REQUIRED - REQUIRABLE
    if unknown:
        raise pytest.UsageError(
            'PLAYHOUSE_POOL_REQUIRE names %s, which no test knows; it takes '
            '%s' % (', '.join(sorted(unknown)), ', '.join(sorted(REQUIRABLE))))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The skipped tests, one line per reason: a missing driver or server
    skips a hundred tests or more for one reason (``-rs`` lists each)."""
    if 's' in terminalreporter.reportchars:
        return
    reasons: collections.Counter = collections.Counter()
    for report in terminalreporter.stats.get('skipped', []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) \
            else str(report.longrepr)
        reasons[reason.replace('Skipped: ', '', 1)] += 1
    if reasons:
        terminalreporter.section('skipped, by reason (-rs lists each test)')
        for reason, count in reasons.most_common():
            terminalreporter.line('%5d  %s' % (count, reason))


def _require(cls: Any) -> None:
    """Skip (or, if PLAYHOUSE_POOL_REQUIRE names it, fail) a backend whose
    server is unreachable or whose driver is not installed."""
    if _PEEWEE_MAJOR < cls.needs_peewee:
        pytest.skip('%s needs peewee %d+ (this is %s)'
                    % (cls.name, cls.needs_peewee, peewee.__version__))
    reason = None
    if cls.driver:
        try:
            importlib.import_module(cls.driver)
        except ImportError as exc:
            reason = '%s: driver %s not installed (%s): %s' % (
                cls.name, cls.driver, exc, cls.install)
        if reason is not None and cls.name in REQUIRED:
            pytest.fail('%s (PLAYHOUSE_POOL_REQUIRE names it)' % reason)
    if reason is None and cls.server != 'sqlite':
        reason = _unreachable_reason(cls.server)
        if reason is not None and cls.server in REQUIRED:
            pytest.fail('%s (PLAYHOUSE_POOL_REQUIRE names it)' % reason)
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(params=BACKENDS, ids=[b.name for b in BACKENDS])
def backend(request: Any, tmp_path: Any) -> Iterator[Backend]:
    """Every backend: SQLite (sqlite3, cysqlite), Postgres (psycopg2,
    psycopg 3), MySQL (pymysql, mysqlclient, mysql-connector, MariaDB
    Connector/Python)."""
    yield from _backend(request.param, tmp_path)


@pytest.fixture(params=SERVER_BACKENDS, ids=[b.name for b in SERVER_BACKENDS])
def server_backend(request: Any, tmp_path: Any) -> Iterator[Backend]:
    """The backends with a server that can kill connections."""
    yield from _backend(request.param, tmp_path)


def _backend(cls: Any, tmp_path: Any) -> Iterator[Backend]:
    _require(cls)
    b = cls(tmp_path)
    try:
        yield b
    finally:
        b.close()


@contextlib.contextmanager
def held_elsewhere(db: Any) -> Iterator[threading.Thread]:
    """For the block, another thread holds a connection of ``db`` (checked
    out before the block starts, checked in after it ends)."""
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        db.connect()
        holding.set()
        done.wait(30)
        db.close()

    thread = threading.Thread(target=hold)
    thread.start()
    assert holding.wait(10), 'the holder did not get a connection'
    try:
        yield thread
    finally:
        done.set()
        thread.join(10)


def run_threads(count: int, target: Callable[[int], Any],
                timeout: float = 30.0) -> List[Any]:
    """Run ``target(i)`` in ``count`` threads; re-raise the first error."""
    results: List[Any] = [None] * count
    errors: List[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), 'thread did not finish'
    if errors:
        raise errors[0]
    return results


def pytest_collection_modifyitems(items: List[Any]) -> None:
    """Mark every test that talks to PostgreSQL or MySQL ``server``, so that
    ``-m "not server"`` selects the SQLite and pure tests (tox runs those on
    the other Pythons)."""
    for item in items:
        callspec = getattr(item, 'callspec', None)
        params = callspec.params.values() if callspec else ()
        if 'pgbouncer' in getattr(item, 'fixturenames', ()) or any(
                getattr(p, 'server', 'sqlite') != 'sqlite' for p in params):
            item.add_marker(pytest.mark.server)


@pytest.fixture
def proxied(server_backend):
    """(backend, proxy, make_db): databases whose connections go through
    the proxy."""
    url = POSTGRES_URL if server_backend.server == 'postgres' else MYSQL_URL
    parsed = urlparse(url)
    proxy = LatencyProxy(parsed.hostname, parsed.port or (
        5432 if server_backend.server == 'postgres' else 3306)).start()

    def make_db(db_class=None, **kwargs):
        return server_backend.make_db(db_class, host='127.0.0.1',
                                      port=proxy.port, **kwargs)
    try:
        yield server_backend, proxy, make_db
    finally:
        proxy.hang(False)
        proxy.stop()
