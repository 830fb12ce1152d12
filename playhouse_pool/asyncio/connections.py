"""pwasyncio's connection wrappers, as the pool keeps them: each tracks
whether a statement is in flight (set before the driver is awaited,
cleared when it answers, left set by a cancel), the one thing no driver
tells of itself in time, which check-in reads (backends.py). The MySQL
wrapper also sees a server-side close, and lets a ROLLBACK on a connection
aiomysql closed for a cancel be a no-op (the server rolled back), so the
cancel, not an InterfaceError, reaches the caller of ``atomic()``.
"""
from typing import Any, List, Optional, Tuple

from playhouse import pwasyncio

# aiomysql's reason for a connection it closed because a query was
# cancelled (Connection._close_on_cancel).
_CANCELLED = 'Cancelled during execution'


class InFlight:
    """Mixin, first in the bases, for a pwasyncio connection wrapper:
    ``in_flight`` is True from a statement's start until the driver
    answers (an error included); a cancel leaves it True."""
    in_flight = False

    async def execute(self, sql: str, params: Any = None) -> Any:
        self.in_flight = True
        try:
            result = await super().execute(  # type: ignore[misc]
                sql, params)
        except Exception:
            self.in_flight = False
            raise
        self.in_flight = False
        return result


class PgConnection(InFlight, pwasyncio.AsyncPostgresqlConnection):
    """asyncpg's connection in pwasyncio's wrapper. ``session``: what the
    session had set when it opened (reset_session sets it again)."""

    def __init__(self, conn: Any,
                 session: Optional[List[Tuple[str, str]]] = None) -> None:
        super().__init__(conn)
        self.session = session


class MySQLConnection(InFlight, pwasyncio.AsyncMySQLConnection):
    """aiomysql's connection in pwasyncio's wrapper."""

    def stale(self) -> bool:
        # aiomysql's ``closed`` is the local side only: a server KILL or
        # wait_timeout is seen as the reader's EOF, or an error packet
        # waiting in its buffer while no statement runs.
        conn = self.conn
        if conn is None or conn.closed:
            return True
        reader = conn._reader
        if reader is None or reader.at_eof():
            return True
        return bool(reader._buffer) and not (self.in_flight
                                             or self._streaming)

    async def _execute(self, sql: str, params: Any = None) -> Any:
        conn = self.conn
        if (conn is not None and conn.closed
                and getattr(conn, '_close_reason', None) == _CANCELLED
                and sql.strip().upper() == 'ROLLBACK'):
            return pwasyncio.CursorAdapter([])
        return await super()._execute(sql, params)


class SqliteConnection(InFlight, pwasyncio.AsyncSqliteConnection):
    """aiosqlite's connection in pwasyncio's wrapper."""
