"""The asyncio face's databases, under peewee 4's names and subclasses of
its own (``playhouse.pwasyncio``): one hook set per driver, what the
driver tells cheaply about a connection and how it is cleaned.

======== ============================== ==================================
driver   dead, with no I/O              left unclean (check-in)
======== ============================== ==================================
asyncpg  ``is_closed()`` (the loop      a cancel under way, a transaction
         read the server's goodbye)     (``_top_xact`` or the last status)
aiomysql ``closed``, the reader's EOF   a transaction (the last status);
         or an error packet waiting     aiomysql closes a connection whose
                                        query was cancelled
aiosqlite its worker thread stopped     a transaction; a statement
                                        cancelled mid-way still runs on
                                        its thread: replaced
======== ============================== ==================================

A connection left unclean goes out for a reset job (opening.py) at
check-in; the task checking in never waits for it.
"""
import threading
from dataclasses import replace
from typing import Any, Dict

from peewee import ImproperlyConfigured, OperationalError
from playhouse import pwasyncio

from .._options import PoolOptions
from ..backends import _PG_RESET, _PG_SESSION_SETTINGS
from .connections import MySQLConnection, PgConnection, SqliteConnection
from .opening import BROKEN, CLEAN, DIRTY
from .pool import AsyncPooledDatabase

# reset_session sets again what the session had set when it opened (what
# RESET ALL undoes), in asyncpg's placeholders.
_PG_RESTORE = ('SELECT set_config(name, setting, false) FROM '
               'unnest($1::text[], $2::text[]) AS s(name, setting)')
_COM_RESET_CONNECTION = 0x1f


def _driver(name: str) -> Any:
    module = getattr(pwasyncio, name, None)
    if module is None:
        raise ImproperlyConfigured(
            '%s is not installed: pip install %s' % (name, name))
    return module


class AsyncPostgresqlDatabase(AsyncPooledDatabase,
                              pwasyncio.AsyncPostgresqlDatabase):
    """Pooled ``playhouse.pwasyncio.AsyncPostgresqlDatabase`` (asyncpg)."""

    async def _open_async(self, params: Dict[str, Any],
                          seconds: float) -> Any:
        asyncpg = _driver('asyncpg')
        database = self.database
        if isinstance(database, str) and database.startswith(
                ('postgresql://', 'postgres://')):
            params['dsn'] = database
        else:
            params['database'] = database
        params.setdefault('timeout', seconds)
        try:
            conn = await asyncpg.connect(**params)
        except (asyncpg.CannotConnectNowError,
                asyncpg.TooManyConnectionsError) as exc:
            # The server starts, or is full: worth another attempt.
            raise OperationalError(str(exc)) from exc
        try:
            await self.register_adapters(conn)
            session = None
            if self._pool_options.reset_session:
                session = [(r[0], r[1]) for r in
                           await conn.fetch(_PG_SESSION_SETTINGS)]
        except BaseException:
            conn.terminate()
            raise
        return PgConnection(conn, session)

    def _checkin_state(self, conn: Any) -> str:
        raw = conn.conn
        if raw is None or conn._streaming or raw.is_closed():
            return BROKEN
        protocol = raw._protocol          # (its flags, one call each)
        if (protocol._is_cancelling() or raw._top_xact is not None
                or protocol.is_in_transaction()
                or self._pool_options.reset_session):
            return DIRTY
        return CLEAN

    async def _reset_async(self, conn: Any) -> bool:
        raw = conn.conn
        if raw is None or raw.is_closed():
            return False
        protocol = raw._protocol
        if protocol._is_cancelling():
            # A cancelled query: asyncpg's cancel request is answered
            # first (asyncpg's own pool does the same).
            await protocol._wait_for_cancellation(None)
            if raw.is_closed():
                return False
        if raw._top_xact is not None:
            # Through the transaction object, or asyncpg still thinks it
            # is in one (pwasyncio's atomic() uses them).
            await raw._top_xact.rollback()
        elif raw.is_in_transaction():
            await raw.execute('ROLLBACK')
        if self._pool_options.reset_session:
            if conn.session is None:      # opened before reset_session
                return False
            await raw.execute(_PG_RESET)
            if conn.session:
                await raw.execute(_PG_RESTORE,
                                  [name for name, _ in conn.session],
                                  [value for _, value in conn.session])
        return True

    async def _ping_async(self, conn: Any) -> None:
        await conn.conn.fetchval('SELECT 1')

    def _abort(self, raw: Any) -> None:
        raw.terminate()


class AsyncMySQLDatabase(AsyncPooledDatabase, pwasyncio.AsyncMySQLDatabase):
    """Pooled ``playhouse.pwasyncio.AsyncMySQLDatabase`` (aiomysql)."""

    async def _open_async(self, params: Dict[str, Any],
                          seconds: float) -> Any:
        aiomysql = _driver('aiomysql')
        params.setdefault('connect_timeout', seconds)
        conn = await aiomysql.connect(db=self.database, autocommit=True,
                                      **params)
        if self.server_version is None:
            try:
                self.server_version = self._extract_server_version(
                    conn.get_server_info())
            except BaseException:
                conn.close()
                raise
        return MySQLConnection(conn)

    def _checkin_state(self, conn: Any) -> str:
        # aiomysql closes a connection whose statement was cancelled.
        if conn.stale() or conn._streaming:
            return BROKEN
        if (conn.conn.get_transaction_status()
                or self._pool_options.reset_session):
            return DIRTY
        return CLEAN

    async def _reset_async(self, conn: Any) -> bool:
        raw = conn.conn
        if raw is None or raw.closed:
            return False
        if raw.get_transaction_status():
            await raw.rollback()
        if self._pool_options.reset_session:
            await self._reset_session(raw)
        return True

    async def _reset_session(self, raw: Any) -> None:
        """COM_RESET_CONNECTION (MySQL 5.7+, MariaDB 10.2+), then what the
        connect set up again: autocommit, sql_mode, init_command."""
        await raw._execute_command(_COM_RESET_CONNECTION, b'')
        await raw._read_ok_packet()
        await raw.autocommit(True)
        cursor = await raw.cursor()
        try:
            sql_mode = self.connect_params.get('sql_mode')
            if sql_mode is not None:
                await cursor.execute('SET sql_mode=%s', (sql_mode,))
            init_command = self.connect_params.get('init_command')
            if init_command is not None:
                await cursor.execute(init_command)
        finally:
            await cursor.close()

    async def _ping_async(self, conn: Any) -> None:
        await conn.conn.ping(reconnect=False)

    def _abort(self, raw: Any) -> None:
        raw.close()

    def _forget(self, conn: Any) -> None:
        # Its destructor would close the transport through the gone loop
        # (an error printed at garbage collection); the transport's own
        # finalizer closes the socket.
        raw = conn.conn
        if raw is not None:
            raw._writer = raw._reader = None


class AsyncSqliteDatabase(AsyncPooledDatabase,
                          pwasyncio.AsyncSqliteDatabase):
    """Pooled ``playhouse.pwasyncio.AsyncSqliteDatabase`` (aiosqlite).
    ``':memory:'`` is one connection, as in pwasyncio (each connection
    would open its own empty database)."""

    def _fit(self, database: Any, options: PoolOptions) -> PoolOptions:
        if database == ':memory:':
            return replace(options, max_connections=1,
                           min_connections=min(options.min_connections, 1))
        return options

    async def _open_async(self, params: Dict[str, Any],
                          seconds: float) -> Any:
        aiosqlite = _driver('aiosqlite')
        conn = await aiosqlite.connect(self.database, isolation_level=None,
                                       timeout=self._timeout, **params)
        try:
            await self._add_conn_hooks(conn)
        except BaseException:
            conn.stop()
            raise
        return SqliteConnection(conn)

    def _checkin_state(self, conn: Any) -> str:
        # A statement cancelled mid-way runs on in aiosqlite's thread, and
        # nothing says when it ends: replaced. No session to reset in
        # SQLite: with reset_session a new connection is the reset.
        if (conn.stale() or conn._streaming or conn.in_flight
                or self._pool_options.reset_session):
            return BROKEN
        if conn.conn.in_transaction:
            return DIRTY
        return CLEAN

    async def _reset_async(self, conn: Any) -> bool:
        raw = conn.conn
        if raw is None or conn.stale():
            return False
        if raw.in_transaction:
            await raw.rollback()
        return True

    async def _ping_async(self, conn: Any) -> None:
        cursor = await conn.conn.execute('SELECT 1')
        await cursor.close()

    async def _close_async(self, conn: Any) -> None:
        raw = conn.conn
        if conn.in_flight and not conn.stale():
            # The statement still running ends now, and the close queued
            # behind it comes at once.
            await raw.interrupt()
        await conn.close()

    def _abort(self, raw: Any) -> None:
        raw.stop()

    def _forget(self, conn: Any) -> None:
        # No transport, but a thread, which is not a daemon: it ends. Told
        # from a thread with no event loop, so that it answers none (the
        # loop calling this may be closed by the time it is done).
        raw = conn.conn
        if raw is not None:
            threading.Thread(target=raw.stop, daemon=True,
                             name='playhouse_pool-forget').start()


