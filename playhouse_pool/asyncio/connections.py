"""pwasyncio's connection wrappers, as the pool keeps them. asyncpg tells
of a cancelled statement itself (a cancel under way), and aiomysql closes
a connection whose statement was cancelled; aiosqlite tells nothing, so its
wrapper tracks whether a statement is in flight (set before the driver is
awaited, cleared when it answers, left set by a cancel), which check-in
reads (backends.py). The MySQL wrapper also sees a server-side close, and
lets a ROLLBACK on a connection aiomysql closed for a cancel be a no-op
(the server rolled back), so the cancel, not an InterfaceError, reaches the
caller of ``atomic()``.
"""
from typing import Any, List, Optional, Tuple

from playhouse import pwasyncio

# aiomysql's reason for a connection it closed because a query was
# cancelled (Connection._close_on_cancel).
_CANCELLED = 'Cancelled during execution'


class PgConnection(pwasyncio.AsyncPostgresqlConnection):
    """asyncpg's connection in pwasyncio's wrapper. ``session``: what the
    session had set when it opened (reset_session sets it again)."""

    def __init__(self, conn: Any,
                 session: Optional[List[Tuple[str, str]]] = None) -> None:
        super().__init__(conn)
        self.session = session


class MySQLConnection(pwasyncio.AsyncMySQLConnection):
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
        # (Its lock is held while a statement runs or a stream is open.)
        return bool(reader._buffer) and not self._lock.locked()

    async def _execute(self, sql: str, params: Any = None) -> Any:
        conn = self.conn
        if (conn is not None and conn.closed
                and getattr(conn, '_close_reason', None) == _CANCELLED
                and sql.strip().upper() == 'ROLLBACK'):
            return pwasyncio.CursorAdapter([])
        return await super()._execute(sql, params)


class SqliteConnection(pwasyncio.AsyncSqliteConnection):
    """aiosqlite's connection in pwasyncio's wrapper. ``in_flight`` is True
    from a statement's start until aiosqlite answers (an error included);
    a cancel leaves it True: the statement runs on in aiosqlite's thread."""
    in_flight = False

    async def execute(self, sql: str, params: Any = None) -> Any:
        self.in_flight = True
        try:
            result = await super().execute(sql, params)
        except Exception:
            self.in_flight = False
            raise
        self.in_flight = False
        return result
