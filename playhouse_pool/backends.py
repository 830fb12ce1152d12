"""The pooled database classes, one small hook set per driver.

Each backend answers five questions for the pool (see ``PooledDatabase``):
is the connection dead by its local flags (``_is_closed``), which socket to
probe (``_fileno``), does it answer a round trip (``_ping``), can it be
cleaned for reuse at check-in (``_can_reuse``), and does a checkout's failed
first statement prove that it never ran (``_never_ran``, rules in
recovery.py); and which of the driver's keywords end a silent connect
(``_connect_timeouts``). Postgres and SQLite answer here; the MySQL drivers
differ more, and answer in _mysql. The round trips of a check-in are
watched (``_bounded``): a silent server cannot hold the request's thread
past the pool's deadline (docs/design.rst, rule 9).
"""
import math
import os
import weakref
from typing import Any, Callable, Dict, List, Optional, Tuple

import peewee
from peewee import MySQLDatabase, PostgresqlDatabase, SqliteDatabase

from ._compat import (CockroachDatabase, CSqliteExtDatabase, CySqliteDatabase,
                      MariaDBConnectorDatabase, MySQLConnectorDatabase,
                      PostgresqlExtDatabase, Psycopg3Database,
                      SqliteExtDatabase)
from ._mysql import (MARIADB, MYSQL_CONNECTOR, SERVER_STATUS_AUTOCOMMIT,
                     SERVER_STATUS_IN_TRANS, Driver, connector_connect_error,
                     driver_named, driver_of)
from .pool import PooledDatabase
from .recovery import psycopg2_never_ran, psycopg_never_ran, pymysql_never_ran

# libpq's PQtransactionStatus values; psycopg2 and psycopg 3 share them.
_PG_IDLE, _PG_UNKNOWN = 0, 4

# reset_session on Postgres: what DISCARD ALL does, less DEALLOCATE ALL. The
# driver's prepared statements (psycopg 3 prepares repeated queries and keeps
# a cache of their names) must stay valid: after a DEALLOCATE behind its back
# a cached query fails with "prepared statement ... does not exist".
_PG_RESET = ('CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; '
             'UNLISTEN *; SELECT pg_advisory_unlock_all(); DISCARD PLANS; '
             'DISCARD TEMP; DISCARD SEQUENCES')
# RESET ALL also undoes what the driver SET when it connected (psycopg2's
# client_encoding for encoding=..., its DateStyle): those settings, read once
# per connection when it opens, are set again after each reset.
_PG_SESSION_SETTINGS = ("SELECT name, setting FROM pg_settings "
                        "WHERE source = 'session'")
_PG_RESTORE = ('SELECT set_config(name, setting, false) FROM '
               'unnest(%s::text[], %s::text[]) AS s(name, setting)')
_opened_with: 'weakref.WeakKeyDictionary[Any, List[Tuple[str, str]]]' = (
    weakref.WeakKeyDictionary())


class _PooledPostgresql(PooledDatabase):
    """Postgres through psycopg2 or psycopg 3 (told apart by the object)."""

    def _connect(self) -> Any:
        conn = super()._connect()
        if self._pool_options.reset_session:
            try:
                _opened_with[conn] = self._session_settings(conn)
            except BaseException:
                conn.close()
                raise
        return conn

    def _connect_timeouts(self, params: Dict[str, Any],
                          seconds: float) -> Dict[str, Any]:
        # libpq's connect_timeout ends the whole connect, authentication
        # included, in whole seconds (less than 2 counts as 2). The user's
        # own may be a keyword, in the DSN or in the environment.
        given = (self.database, params.get('dsn'), params.get('conninfo'))
        if ('connect_timeout' in params or 'PGCONNECT_TIMEOUT' in os.environ
                or any('connect_timeout' in str(dsn) for dsn in given)):
            return {}
        return {'connect_timeout': max(2, math.ceil(seconds))}

    def _session_settings(self, conn: Any) -> List[Tuple[str, str]]:
        """What the driver SET when it connected, for _reset_session to set
        again (RESET ALL undoes it)."""
        cursor = conn.cursor()
        cursor.execute(_PG_SESSION_SETTINGS)
        return [tuple(row) for row in cursor.fetchall()]

    def _is_closed(self, conn: Any) -> bool:
        return bool(conn.closed) or _pg_status(conn) == _PG_UNKNOWN

    def _fileno(self, conn: Any) -> Optional[int]:
        return conn.fileno()

    def _never_ran(self, conn: Any, error: BaseException,
                   sql: Optional[str]) -> bool:
        rule = (psycopg_never_ran if hasattr(conn, 'pgconn')
                else psycopg2_never_ran)
        return rule(conn, error, sql)

    def _ping(self, conn: Any) -> bool:
        try:
            conn.cursor().execute('SELECT 1')
        except Exception:
            return False
        return True

    def _can_reuse(self, conn: Any) -> bool:
        status = _pg_status(conn)
        if status == _PG_UNKNOWN:           # the server is gone
            return False
        reset = self._pool_options.reset_session
        if status == _PG_IDLE and not reset:
            return True                     # no round trip, no watch
        with self._bounded(conn) as watch:
            if status != _PG_IDLE:
                _pg_rollback(conn)
            clean = not reset or self._reset_session(conn)
        return clean and not watch.cut and _pg_status(conn) == _PG_IDLE

    def _reset_session(self, conn: Any) -> bool:
        """Reset the session outside any transaction; False if the
        connection cannot be reset (a new one is the reset then)."""
        settings = _opened_with.get(conn)
        if settings is None:
            # Opened before reset_session was on (init()): what the driver
            # set up is unknown, so a new connection is the reset.
            return False
        cursor = conn.cursor()
        if _is_psycopg3(conn):
            # Several statements: never prepared, even with psycopg's
            # prepare_threshold=0 (prepare them all).
            cursor.execute(_PG_RESET, prepare=False)
        else:
            cursor.execute(_PG_RESET)
        if settings:
            cursor.execute(_PG_RESTORE, ([name for name, _ in settings],
                                         [value for _, value in settings]))
        return True


def _psycopg3_status(conn: Any) -> int:
    return conn.pgconn.transaction_status


def _psycopg2_status(conn: Any) -> int:
    # For wrapped connections (tracing proxies) whose class lacks the method.
    return conn.get_transaction_status()


# Connection class -> how to read its transaction status (psycopg2's is the
# C method itself, unless a proxy class stands in for the connection): one
# dict lookup on the checkout path, no probing; filled in on first sight of
# a class.
_STATUS_READERS: Dict[type, Callable[[Any], int]] = {}


def _pg_status(conn: Any) -> int:
    try:
        reader = _STATUS_READERS[type(conn)]
    except KeyError:
        reader = (_psycopg3_status if hasattr(conn, 'pgconn')
                  else getattr(type(conn), 'get_transaction_status', None)
                  or _psycopg2_status)
        _STATUS_READERS[type(conn)] = reader
    return reader(conn)


def _is_psycopg3(conn: Any) -> bool:
    # After _pg_status(conn) has seen its class.
    return _STATUS_READERS.get(type(conn)) is _psycopg3_status


def _pg_rollback(conn: Any) -> None:
    if _is_psycopg3(conn):
        conn.rollback()
    else:
        # psycopg2 ignores rollback() in autocommit mode (peewee's mode).
        conn.cursor().execute('ROLLBACK')


class PooledPostgresqlDatabase(  # type: ignore[misc]
        _PooledPostgresql, PostgresqlDatabase):
    """Pooled ``peewee.PostgresqlDatabase``."""


class PooledPostgresqlExtDatabase(
        _PooledPostgresql, PostgresqlExtDatabase):
    """Pooled ``playhouse.postgres_ext.PostgresqlExtDatabase``."""


class PooledPsycopg3Database(
        _PooledPostgresql, Psycopg3Database):
    """Pooled peewee ``Psycopg3Database`` (psycopg 3)."""


class _PooledCockroach(_PooledPostgresql):
    """CockroachDB: the same checks as Postgres (libpq's status, the socket
    probe); ``reset_session`` sends ``DISCARD ALL``, CockroachDB's session
    reset (most of the statements the Postgres reset is made of do not exist
    there)."""

    def _session_settings(self, conn: Any) -> List[Tuple[str, str]]:
        # CockroachDB speaks UTF8 and ISO dates only: psycopg2 sets nothing
        # at connect that DISCARD ALL would undo.
        return []

    def _reset_session(self, conn: Any) -> bool:
        conn.cursor().execute('DISCARD ALL')
        return True


class PooledCockroachDatabase(
        _PooledCockroach, CockroachDatabase):
    """Pooled ``playhouse.cockroachdb.CockroachDatabase`` (psycopg2). Not
    tested against a CockroachDB server."""


class _PooledMySQL(PooledDatabase):
    """MySQL and MariaDB, through whichever driver made the connection: the
    hooks ask the connection's driver (see _mysql) for its local flags, its
    socket and its status flags."""

    def _is_closed(self, conn: Any) -> bool:
        return driver_of(conn).is_closed(conn)

    def _connect_driver(self) -> Driver:
        """The driver this class connects with (before a connection shows
        it): peewee's pick for MySQLDatabase."""
        module = getattr(peewee, 'mysql', None)
        return driver_named(getattr(module, '__name__', ''))

    def _connect_timeouts(self, params: Dict[str, Any],
                          seconds: float) -> Dict[str, Any]:
        return self._connect_driver().connect_timeouts(params, seconds)

    def _restore_timeouts(self, conn: Any, added: Dict[str, Any]) -> None:
        if added:
            driver_of(conn).restore_timeouts(conn, added)

    def _fileno(self, conn: Any) -> Optional[int]:
        return driver_of(conn).fileno(conn)

    def _never_ran(self, conn: Any, error: BaseException,
                   sql: Optional[str]) -> bool:
        return pymysql_never_ran(conn, error, sql)

    def _ping(self, conn: Any) -> bool:
        try:
            driver_of(conn).ping(conn)
        except Exception:
            return False
        return True

    def _can_reuse(self, conn: Any) -> bool:
        driver = driver_of(conn)
        if driver.lost(conn):
            return False
        status = driver.server_status(conn)
        # Unknown: one round trip, always right.
        rollback = status is None or status & SERVER_STATUS_IN_TRANS
        reset = self._pool_options.reset_session
        if not rollback and not reset:
            return True                     # no round trip, no watch
        with self._bounded(conn) as watch:
            if rollback:
                conn.rollback()
            clean = not reset or self._reset_session(conn, driver)
        return clean and not watch.cut

    def _reset_session(self, conn: Any, driver: Driver) -> bool:
        """COM_RESET_CONNECTION (MySQL 5.7+, MariaDB 10.2+): user variables,
        session settings, temporary tables, locks and prepared statements
        go, the connection stays: one round trip. Without it (an unknown
        driver, an older server) the connection is not reused: a new one is
        the reset."""
        if not driver.reset(conn):
            return False
        if driver.restores_session:
            return True
        # The reset also drops what the connect set up (the character set
        # stays): set it again, a round trip each, only for what was set.
        # peewee always connects in autocommit.
        status = driver.server_status(conn)
        cursor = conn.cursor()
        if status is None or not status & SERVER_STATUS_AUTOCOMMIT:
            cursor.execute('SET autocommit=1')
        sql_mode = self.connect_params.get('sql_mode')
        if sql_mode is not None:
            cursor.execute('SET sql_mode=%s', (sql_mode,))
        init_command = self.connect_params.get('init_command')
        if init_command is not None:
            cursor.execute(init_command)
        return True


class PooledMySQLDatabase(_PooledMySQL, MySQLDatabase):  # type: ignore[misc]
    """Pooled ``peewee.MySQLDatabase``, on the driver peewee picked: pymysql,
    else mysqlclient (``MySQLdb``)."""


class _PooledMySQLConnector(_PooledMySQL):
    """mysql-connector-python. With its C extension the driver shows no
    socket: a connection the server closed while it sat idle is found by
    ``ping_after`` or, failing that, by its first statement, not by the
    readability probe."""

    def _connect_driver(self) -> Driver:
        return MYSQL_CONNECTOR

    def _connect(self) -> Any:
        try:
            return super()._connect()
        except Exception as exc:
            error = connector_connect_error(exc)
            if error is exc:
                raise
            raise error from exc


class PooledMySQLConnectorDatabase(
        _PooledMySQLConnector, MySQLConnectorDatabase):
    """Pooled ``playhouse.mysql_ext.MySQLConnectorDatabase``
    (mysql-connector-python)."""


class _PooledMariaDBConnector(_PooledMySQL):
    """MariaDB Connector/Python."""

    def _connect_driver(self) -> Driver:
        return MARIADB

    def _close(self, conn: Any) -> None:
        # Never close(): see MariaDBConnector.shut_down.
        MARIADB.shut_down(conn)


class PooledMariaDBConnectorDatabase(
        _PooledMariaDBConnector, MariaDBConnectorDatabase):
    """Pooled ``playhouse.mysql_ext.MariaDBConnectorDatabase`` (MariaDB
    Connector/Python)."""


class _PooledSqlite(PooledDatabase):
    """SQLite, whatever the driver (sqlite3, apsw, cysqlite, ...): a local
    database has no socket to probe and no server to go away. At check-in
    the driver's transaction flag says whether to roll back (the mixin's
    ``_can_reuse``); no session reset in SQLite: with ``reset_session`` a
    new connection is the reset. ``':memory:'`` is refused: each pooled
    connection would be a separate, empty database."""

    def _check_database(self, database: Any) -> None:
        if database == ':memory:' or database == '':
            raise ValueError(
                "A pooled SQLite database cannot be ':memory:': each pooled "
                "connection would open its own empty database. Use a file, "
                "or a shared in-memory database: 'file:NAME?mode=memory&"
                "cache=shared' with uri=True.")


class _PooledSqlite3(_PooledSqlite):
    """The standard library's sqlite3 (and the drivers built like it:
    pysqlite3, sqlcipher3). Its connections refuse any thread but the one
    that opened them unless opened with ``check_same_thread=False``; pool
    workers open them and the threads that check them out use them (one at
    a time), so that is the default, and an explicit True is refused."""

    def init(self, database: Any, **kwargs: Any) -> None:
        if kwargs.get('check_same_thread', False) is not False:
            raise ValueError(
                'check_same_thread=%r cannot be pooled: pool workers open '
                'the connections and whichever thread checks one out uses '
                'it (never two at once). Leave check_same_thread unset (the '
                'pool sets it to False).' % (kwargs['check_same_thread'],))
        kwargs['check_same_thread'] = False
        super().init(database, **kwargs)

    def _is_closed(self, conn: Any) -> bool:
        try:
            # Any call on a closed sqlite3 connection raises.
            conn.total_changes  # noqa: B018
        except AttributeError:
            return False        # not a sqlite3 connection: nothing to tell
        except Exception:
            return True
        return False


class PooledSqliteDatabase(  # type: ignore[misc]
        _PooledSqlite3, SqliteDatabase):
    """Pooled ``peewee.SqliteDatabase``."""


if SqliteExtDatabase is not None:
    class PooledSqliteExtDatabase(_PooledSqlite3, SqliteExtDatabase):
        """Pooled ``playhouse.sqlite_ext.SqliteExtDatabase`` (peewee 3)."""
else:
    PooledSqliteExtDatabase = PooledSqliteDatabase  # type: ignore


class PooledCSqliteExtDatabase(_PooledSqlite3, CSqliteExtDatabase):
    """Pooled ``playhouse.sqlite_ext.CSqliteExtDatabase`` (peewee 3 built
    with its C extension)."""


class _PooledCySqlite(_PooledSqlite):
    """cysqlite (peewee 4): its connections may be used from any thread (it
    has no ``check_same_thread``)."""

    def _is_closed(self, conn: Any) -> bool:
        return conn.is_closed()


class PooledCySqliteDatabase(
        _PooledCySqlite, CySqliteDatabase):
    """Pooled ``playhouse.cysqlite_ext.CySqliteDatabase`` (the ``cysqlite``
    package, peewee 4). ``is_closed()`` is the only check."""


# Hand-made compositions (``class P(PooledDatabase, SqliteDatabase)``) get
# the hooks of their database's family: the most derived class listed here
# that the composition is made of decides. By name, so that no optional
# driver is imported for it.
for _database, _hooks in (
        ('peewee.PostgresqlDatabase', _PooledPostgresql),
        ('playhouse.cockroachdb.CockroachDatabase', _PooledCockroach),
        ('peewee.MySQLDatabase', _PooledMySQL),
        ('playhouse.mysql_ext.MySQLConnectorDatabase',
         _PooledMySQLConnector),
        ('playhouse.mysql_ext.MariaDBConnectorDatabase',
         _PooledMariaDBConnector),
        ('peewee.SqliteDatabase', _PooledSqlite3),
        ('playhouse.cysqlite_ext.CySqliteDatabase', _PooledCySqlite),
        ('playhouse.apsw_ext.APSWDatabase', _PooledSqlite)):
    PooledDatabase._families[_database] = _hooks
