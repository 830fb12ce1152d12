"""Opening, checking, cleaning and closing one connection on the event
loop, through the database's per-driver hooks (backends.py): the jobs'
I/O side for the asyncio face (``jobs.ConnectionIO``, its methods
coroutines). Every piece of I/O has a deadline (docs/design.rst, rule 9):
``io_seconds``, as for threads (``timeout`` kept between 2 and 10 s, 10 s
without one); one that passes it is counted
in ``pool_stats()['io_timeouts']``, and a close cut short aborts the
connection without waiting. Messages name the database without a secret.
"""
import asyncio
import inspect
import logging
import sys
import time
from typing import Any, Awaitable, Callable, Dict, Optional, Protocol, TypeVar

from peewee import OperationalError

from .._options import PoolOptions
from ..errors import ConfigureError
from ..opening import DatabaseNames, driver_errors, resolve_providers
from ..records import PoolConnection

logger = logging.getLogger('playhouse_pool')

# What a check-in finds, by the driver's flags (backends.py): clean, left
# in a transaction or mid-statement (a reset job cleans it), or replaced.
CLEAN, DIRTY, BROKEN = 'clean', 'dirty', 'broken'

T = TypeVar('T')


class AsyncHooks(Protocol):
    """The database, as its connections' I/O sees it: peewee's name for
    it and the backend's hooks (backends.py)."""
    database: Any
    connect_params: Dict[str, Any]
    _pool_options: PoolOptions

    async def _open_async(self, params: Dict[str, Any],
                          seconds: float) -> Any: ...
    async def _ping_async(self, conn: Any) -> None: ...
    async def _reset_async(self, conn: Any) -> bool: ...
    async def _close_async(self, conn: Any) -> None: ...
    def _abort(self, raw: Any) -> None: ...
    def _checkin_state(self, conn: Any) -> str: ...


async def bounded(awaitable: Awaitable[T], seconds: float) -> T:
    """``awaitable`` within ``seconds``, else ``asyncio.TimeoutError``. A
    cancel of the caller always ends it with CancelledError: before 3.11,
    no ``wait_for`` (which may swallow a cancel that races the result),
    but a task of its own, cancelled if the caller is or time runs out."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await awaitable
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except BaseException:
        task.cancel()
        raise
    if not done:
        task.cancel()
        raise asyncio.TimeoutError()
    return task.result()


class Liveness:
    """A record's probe (``records.PoolConnection.probe``): on the event
    loop the driver's flags and transport already say what a socket poll
    would (the loop reads every socket as data arrives), so "has something
    to say" is the wrapper's ``stale()``, with no I/O."""
    __slots__ = ('conn',)

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def readable(self) -> bool:
        return bool(self.conn.stale())


class AsyncOpener(DatabaseNames):
    """One database's connections, opened, checked, cleaned and closed on
    the loop. ``io_timed_out`` is told of each piece of I/O that ran past
    its deadline."""
    db: AsyncHooks

    def __init__(self, db: AsyncHooks,
                 io_timed_out: Callable[[], None]) -> None:
        self.db = db
        self._io_timed_out = io_timed_out

    def seconds(self) -> float:
        """The deadline of one piece of the pool's own I/O (the thread
        face's, ``PoolOptions.io_seconds``)."""
        return self.db._pool_options.io_seconds

    # -- ConnectionIO ---------------------------------------------------------

    async def open(self) -> PoolConnection:
        """Open, set up and wrap a connection. Raises the driver's error
        (as peewee's), ConfigureError, or OperationalError if it did not
        connect in time."""
        db = self.db
        seconds = self.seconds()
        # The callables' values (secrets) stay in this frame and the driver.
        params = resolve_providers(dict(db.connect_params))
        try:
            with driver_errors:
                conn = await bounded(db._open_async(params, seconds),
                                     seconds)
        except asyncio.TimeoutError:
            self._io_timed_out()
            raise OperationalError('Connecting to %s timed out after %gs.'
                                   % (self.name(), seconds)) from None
        try:
            await self._configure(conn, seconds)
        except BaseException:
            await self._close(conn)
            raise
        return PoolConnection(conn, id(conn), Liveness(conn),
                              db._pool_options.stale_timeout,
                              time.monotonic())

    async def close(self, record: PoolConnection) -> None:
        await self._close(record.conn)

    async def ping(self, record: PoolConnection,
                   seconds: Optional[float] = None) -> bool:
        """A round trip within ``seconds`` (default: the I/O deadline)."""
        try:
            await bounded(self.db._ping_async(record.conn),
                          self.seconds() if seconds is None else seconds)
        except asyncio.TimeoutError:
            self._io_timed_out()
            return False
        except Exception:
            return False
        return True

    async def reset(self, record: PoolConnection) -> bool:
        """Clean a connection as check-in would have: one check-in would
        replace (reclaimed from a task that ended mid-statement, say) is
        not reused; a clean one costs no I/O."""
        state = self.db._checkin_state(record.conn)
        if state != DIRTY:
            return state == CLEAN
        try:
            return await bounded(self.db._reset_async(record.conn),
                                 self.seconds())
        except asyncio.TimeoutError:
            self._io_timed_out()
        except Exception:
            logger.debug('Connection %s failed its reset.', record.key,
                          exc_info=True)
        return False

    # -- On a wrapped connection ----------------------------------------------

    async def _configure(self, conn: Any, seconds: float) -> None:
        """The user's ``configure`` on the driver's connection; it may be a
        coroutine function."""
        configure = self.db._pool_options.configure
        if configure is None:
            return
        try:
            result = configure(conn.conn)
            if inspect.isawaitable(result):
                await bounded(result, seconds)
        except asyncio.TimeoutError:
            self._io_timed_out()
            raise ConfigureError('configure() did not finish within %gs on a '
                                 'new connection.' % seconds) from None
        except Exception as exc:
            raise ConfigureError('configure() failed on a new connection: %s'
                                 % self.describe(exc)) from exc

    async def _close(self, conn: Any) -> None:
        """Close it within the deadline, else abort it; raises nothing but
        a cancel (after aborting the connection)."""
        raw = conn.conn
        if raw is None:
            return
        try:
            await bounded(self.db._close_async(conn), self.seconds())
            return
        except asyncio.TimeoutError:
            self._io_timed_out()
        except Exception:
            logger.debug('Error closing connection %x.', id(conn),
                         exc_info=True)
        except BaseException:
            self._abort(conn, raw)
            raise
        self._abort(conn, raw)

    def _abort(self, conn: Any, raw: Any) -> None:
        try:
            self.db._abort(raw)
        except Exception:
            logger.debug('Error aborting connection %x.', id(conn),
                         exc_info=True)
