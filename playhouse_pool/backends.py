"""The pooled database classes, one small hook set per driver.

Each backend answers five questions for the pool (see ``PooledDatabase``):
is the connection dead by its local flags (``_is_closed``), which socket to
probe (``_fileno``), does it answer a round trip (``_ping``), can it be
cleaned for reuse at check-in (``_can_reuse``), and does a checkout's failed
first statement prove that it never ran (``_never_ran``, rules in
recovery.py).
"""
import weakref
from typing import Any, Callable, Dict, List, Optional, Tuple

from peewee import MySQLDatabase, PostgresqlDatabase, SqliteDatabase

from ._compat import PostgresqlExtDatabase, Psycopg3Database, SqliteExtDatabase
from .pool import PooledDatabase
from .recovery import psycopg2_never_ran, psycopg_never_ran, pymysql_never_ran

# libpq's PQtransactionStatus values; psycopg2 and psycopg 3 share them.
_PG_IDLE, _PG_UNKNOWN = 0, 4
_MYSQL_IN_TRANS = 1     # SERVER_STATUS_IN_TRANS
_COM_RESET_CONNECTION = 0x1f

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
                cursor = conn.cursor()
                cursor.execute(_PG_SESSION_SETTINGS)
                _opened_with[conn] = [tuple(row) for row in cursor.fetchall()]
            except BaseException:
                conn.close()
                raise
        return conn

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
        if status != _PG_IDLE:
            _pg_rollback(conn)
        if self._pool_options.reset_session:
            settings = _opened_with.get(conn)
            if settings is None:
                # Opened before reset_session was on (init()): what the
                # driver set up is unknown, so a new connection is the reset.
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
        return status == _PG_IDLE or _pg_status(conn) == _PG_IDLE


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


class _PooledMySQL(PooledDatabase):
    """MySQL and MariaDB through pymysql."""

    def _is_closed(self, conn: Any) -> bool:
        return not conn.open

    def _fileno(self, conn: Any) -> Optional[int]:
        sock = getattr(conn, '_sock', None)
        return sock.fileno() if sock is not None else None

    def _never_ran(self, conn: Any, error: BaseException,
                   sql: Optional[str]) -> bool:
        return pymysql_never_ran(conn, error, sql)

    def _ping(self, conn: Any) -> bool:
        try:
            # Never reconnect behind the user's back: a silent reconnect
            # would hand out a connection stripped of its session.
            conn.ping(reconnect=False)
        except Exception:
            return False
        return True

    def _can_reuse(self, conn: Any) -> bool:
        if not conn.open:
            return False
        if (conn.server_status or 0) & _MYSQL_IN_TRANS:
            conn.rollback()
        if self._pool_options.reset_session:
            return _mysql_reset_connection(conn)
        return True


def _mysql_reset_connection(conn: Any) -> bool:
    """COM_RESET_CONNECTION (MySQL 5.7+, MariaDB 10.2+): user variables,
    session settings, temporary tables, locks and prepared statements go,
    the connection stays. pymysql has no public call for it; through its
    command channel it costs one round trip. Without it (another driver, an
    older server) the connection is not reused: a new one is the reset."""
    execute = getattr(conn, '_execute_command', None)
    read_ok = getattr(conn, '_read_ok_packet', None)
    if execute is None or read_ok is None:
        return False
    execute(_COM_RESET_CONNECTION, b'')
    read_ok()
    # The reset also drops what pymysql set up at connect: set it again
    # (a round trip each, only for what was set).
    mode = getattr(conn, 'autocommit_mode', None)
    if mode is not None and conn.get_autocommit() != bool(mode):
        conn.autocommit(mode)
    cursor = conn.cursor()
    if getattr(conn, 'sql_mode', None) is not None:
        cursor.execute('SET sql_mode=%s', (conn.sql_mode,))
    if getattr(conn, 'init_command', None) is not None:
        cursor.execute(conn.init_command)
    return True


class PooledMySQLDatabase(_PooledMySQL, MySQLDatabase):  # type: ignore[misc]
    """Pooled ``peewee.MySQLDatabase`` (pymysql)."""


class _PooledSqlite(PooledDatabase):
    """SQLite: pooled connections move between threads, so
    ``check_same_thread=False`` is the default. ``':memory:'`` is refused:
    each pooled connection would be a separate, empty database."""

    def init(self, database: Any, **kwargs: Any) -> None:
        kwargs.setdefault('check_same_thread', False)
        super().init(database, **kwargs)

    def _check_database(self, database: Any) -> None:
        if database == ':memory:' or database == '':
            raise ValueError(
                "A pooled SQLite database cannot be ':memory:': each pooled "
                "connection would open its own empty database. Use a file, "
                "or a shared in-memory database: 'file:NAME?mode=memory&"
                "cache=shared' with uri=True.")

    def _is_closed(self, conn: Any) -> bool:
        try:
            # Any call on a closed sqlite3 connection raises.
            conn.total_changes  # noqa: B018
        except Exception:
            return True
        return False

    def _can_reuse(self, conn: Any) -> bool:
        if conn.in_transaction:
            conn.rollback()
        # No session reset in sqlite3: a fresh connection is the reset.
        return not self._pool_options.reset_session


class PooledSqliteDatabase(  # type: ignore[misc]
        _PooledSqlite, SqliteDatabase):
    """Pooled ``peewee.SqliteDatabase``."""


if SqliteExtDatabase is not None:
    class PooledSqliteExtDatabase(_PooledSqlite, SqliteExtDatabase):
        """Pooled ``playhouse.sqlite_ext.SqliteExtDatabase`` (peewee 3)."""
else:
    PooledSqliteExtDatabase = PooledSqliteDatabase  # type: ignore
