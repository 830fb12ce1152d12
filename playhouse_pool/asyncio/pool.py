"""AsyncPooledDatabase: pwasyncio's face of the pool.

peewee 4's ``playhouse.pwasyncio`` gets every connection a task uses
through ``_acquire_conn_async()`` and gives it back through
``_release_conn()`` (``aclose()``, a stale connection, the end of a task
that never called ``aclose()``, ``close_pool()``); ``close_pool()`` ends
in ``_pool_close()``. This mixin overrides those hooks (and ``aconnect()``,
for a double release) and leaves the rest of pwasyncio as it is:
``db.Model``, ``aexecute()``, ``atomic()``, ``run()``, ``iterate()``,
``async with db``. Underneath, the core's bookkeeping (ledger.py,
sweeps.py, housekeeping.py, jobs.py) through the asyncio face
(lending.py, runner.py, opening.py of this package). docs/asyncio-notes.rst
has the study of pwasyncio this builds on.

A pool belongs to one event loop: the one it is first used on (never at
construction: apps are imported, then run). Used from another loop while
that one is closed or stopped (pytest runs each test on a loop of its
own), it forgets the old loop's connections, with a warning, and starts
afresh; while that one runs in another thread, RuntimeError.
"""
import asyncio
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Coroutine, Dict, Optional

from peewee import InterfaceError

from .._options import PoolOptions, seconds
from .._redact import redact
from ..events import PoolEvents
from ..records import PoolConnection
from .keywords import pop_async_options
from .lending import AsyncLender
from .opening import AsyncOpener
from .tasks import TaskOwner, TaskStates, current_task

logger = logging.getLogger('playhouse_pool')


class AsyncPooledDatabase:
    """Mixin, first in the bases, for a ``playhouse.pwasyncio`` database
    class: ``class Db(AsyncPooledDatabase, pwasyncio.AsyncPostgresqlDatabase)``
    (backends.py declares the three). The pool's keywords
    (``max_connections``, ``min_connections``, ``stale_timeout``,
    ``timeout``, ``idle_timeout``, ``ping_after``, ``max_waiting``,
    ``leak_timeout``, ``reset_session``, ``configure``) have the thread
    pool's meanings; pwasyncio's ``pool_size``, ``pool_min_size`` and
    ``acquire_timeout`` are the same settings as the first two and
    ``timeout``, with pwasyncio's defaults (10, 1, 10 s) where neither is
    given. The rest go to peewee and the driver; a connect keyword may be
    a zero-argument callable, called for each new connection.

    A backend gives the hooks its driver needs: ``_open_async``,
    ``_checkin_state``, ``_reset_async``, ``_ping_async``, ``_abort`` (and
    ``_close_async``, ``_forget``, ``_fit``, which have defaults)."""

    if TYPE_CHECKING:
        # pwasyncio's side of the database, which the pool builds on.
        database: Any
        connect_params: Dict[str, Any]
        deferred: bool
        server_version: Any
        _state: Any
        _pool: Any
        _closing: bool
        _pool_size: Optional[int]
        _pool_min_size: int
        _acquire_timeout: Optional[float]

    def __init__(self, database: Any, **kwargs: Any) -> None:
        self._pool_options = pop_async_options(kwargs)
        self._events = PoolEvents()       # listeners: the metrics collectors
        self._opener = AsyncOpener(self, self._count_io_timeout)
        self._lender = AsyncLender(self._checkin_state, self._pool_options,
                                   self._events, self._opener)
        self._binding = threading.Lock()
        options = self._pool_options
        super().__init__(database,  # type: ignore[call-arg]
                         pool_size=options.max_connections,
                         pool_min_size=options.min_connections,
                         acquire_timeout=options.timeout, **kwargs)
        self._state = TaskStates(release=self._reclaim)

    def init(self, database: Any, **kwargs: Any) -> None:
        """peewee's deferred initialisation; accepts the pool's keywords
        (and pwasyncio's) too. A bad keyword raises before anything
        changes."""
        previous = self._pool_options
        options = self._fit(database, pop_async_options(kwargs, previous))
        super().init(database, **kwargs)  # type: ignore[misc]
        self._pool_options = options
        # pwasyncio's attributes, for code that reads them.
        self._pool_size = options.max_connections
        self._pool_min_size = options.min_connections
        self._acquire_timeout = options.timeout
        if options != previous:
            self._lender.reconfigure(options, options.reset_session
                                     and not previous.reset_session)

    def _fit(self, database: Any, options: PoolOptions) -> PoolOptions:
        """The options as this backend can pool ``database`` (SQLite's
        ':memory:' is one connection)."""
        return options

    # -- pwasyncio's hooks ----------------------------------------------------

    async def aconnect(self) -> Any:
        """pwasyncio's: the task's connection, checked out if it has none
        (or its own died). The task lets go of a dead connection before
        anything can fail, so that it is never released twice. While
        close_pool() drains, a task that holds a connection goes on with
        it; a new checkout is refused."""
        state = self._state
        conn = state.conn
        if conn is not None and not conn.stale():
            return conn
        if self._closing:
            raise InterfaceError('Database pool is shutting down.')
        if conn is not None:
            state.drop_connection()
            self._bound().checkin(conn)
        # The lender's checkout awaited here, not through
        # _acquire_conn_async(): one level less to wake up through.
        conn = (await self._checkout()).conn
        state.set_connection(conn)
        return conn

    async def _acquire_conn_async(self) -> Any:
        return (await self._checkout()).conn

    def _checkout(self) -> Coroutine[Any, Any, PoolConnection]:
        """The lender's checkout for the current task (a coroutine)."""
        if self.deferred:
            raise InterfaceError('Error, database must be initialized '
                                 'before opening a connection.')
        lender = self._lender
        if lender.loop is not asyncio._get_running_loop():
            lender = self._bind()
        if self._pool is None:
            # pwasyncio's close_pool() does its per-task work while set.
            self._pool = lender
        return lender.checkout(TaskOwner(current_task()))

    async def _release_conn(self, conn: Any) -> None:
        # Synchronous: aclose() has already forgotten the connection, so
        # nothing may be awaited before the ledger has it back.
        lender = self._lender
        if lender.loop is not asyncio._get_running_loop():
            lender = self._bind()
        lender.checkin(conn)

    async def _reclaim(self, conn: Any) -> None:
        """pwasyncio's release of the connection of a task that ended
        without aclose() (a task of its own, created by the task-done
        callback): reclaimed, logged and counted."""
        lender = self._lender
        if lender.loop is asyncio._get_running_loop():
            lender.reclaim(conn)

    async def _pool_close(self) -> None:
        """The end of close_pool(): close_all() with ``timeout`` for
        checked-out connections to come back (pwasyncio waited
        acquire_timeout). The next checkout opens a new connection."""
        await self.close_all(self._pool_options.timeout)

    # -- The loop the pool belongs to -----------------------------------------

    def _bound(self) -> AsyncLender:
        """The lender of the running loop (binding the pool to it if it is
        the first)."""
        lender = self._lender
        if lender.loop is None or lender.loop is not \
                asyncio.get_running_loop():
            return self._bind()
        return lender

    def _bind(self) -> AsyncLender:
        loop = asyncio.get_running_loop()
        with self._binding:
            lender = self._lender
            old = lender.loop
            if old is None:
                lender.bind(loop)
                return lender
            if old is loop:
                return lender
            if old.is_running() and not old.is_closed():
                raise RuntimeError(
                    'playhouse_pool: %r belongs to the event loop it was '
                    'first used on (%r), which is running in another '
                    'thread; a pool serves one event loop. Use it from '
                    'that loop (asyncio.run_coroutine_threadsafe), or give '
                    'this loop a database of its own.' % (self, old))
            forgotten = lender.forget()
            logger.warning(
                'playhouse_pool: %r was used on an event loop that is now '
                '%s; its %d connection(s) are forgotten (not closed: they '
                'belong to that loop) and the pool starts afresh on this '
                'one.', self, 'closed' if old.is_closed() else 'stopped',
                len(forgotten))
            for record in forgotten:
                try:
                    self._forget(record.conn)
                except Exception:
                    logger.debug('Error forgetting connection %s.',
                                 record.key, exc_info=True)
            self._lender = AsyncLender(self._checkin_state,
                                       self._pool_options, self._events,
                                       self._opener,
                                       counters=lender.ledger.counters)
            self._lender.bind(loop)
            # That loop's tasks are gone: their states go (a task of this
            # loop may get the id of one of them).
            self._state.forget_tasks()
            self._pool = None
            return self._lender

    # -- The pool's API -------------------------------------------------------

    async def close_all(self, timeout: Optional[float] = None) -> int:
        """Close every connection, idle and checked out, and stop the
        pool's tasks. Tasks waiting for a connection stay in line and are
        served by new connections. With ``timeout`` (seconds), a graceful
        shutdown instead: waiting tasks get ``PoolClosedError``, new
        checkouts are refused, and checked-out connections get up to that
        long to come back. The calling task's own connection is closed
        now. The pool stays usable: the next checkout opens a new
        connection. Returns how many connections were closed."""
        wait = seconds('timeout', timeout) or 0.0
        lender = self._bound()
        state = self._state
        conn = state.conn
        own_key = None
        if conn is not None:
            own_key = id(conn)
            state.drop_connection()
        return await lender.close_all(own_key, wait)

    def recycle(self) -> int:
        """Replace every connection: idle ones now, checked-out ones when
        they are checked in, connects under way when they land; checkouts
        go on being served meanwhile. Returns at once, with how many
        connections will be replaced. Any thread may call it."""
        count = self._lender.sweeps.recycle(time.monotonic())
        logger.info('Recycling %d connection(s).', count)
        return count

    async def warm_up(self, timeout: Optional[float] = 30.0) -> None:
        """Open ``min_connections`` now and wait until they are open (at
        application start-up, say). Raises ``OperationalError`` if they are
        not open within ``timeout`` seconds (None: as long as it takes),
        chaining the last connect error if connects failed."""
        lender = self._bound()
        if self._pool is None:
            self._pool = lender
        await lender.warm_up(seconds('timeout', timeout))

    def pool_stats(self) -> Dict[str, Any]:
        """A snapshot of the pool, with the thread pool's keys (see
        ``PooledDatabase.pool_stats``); ``waiting`` counts tasks."""
        return self._lender.ledger.stats()

    def _count_io_timeout(self) -> None:
        # The I/O that ran past its deadline (opening.py).
        ledger = self._lender.ledger
        with ledger.lock:
            ledger.counters.io_timeouts += 1

    def __repr__(self) -> str:
        stats = self.pool_stats()
        return '<%s %r open=%d in_use=%d idle=%d max_connections=%s>' % (
            type(self).__name__, redact(str(self.database)), stats['open'],
            stats['in_use'], stats['idle'], stats['max_connections'] or None)

    # -- Backend hooks (backends.py) ------------------------------------------

    async def _open_async(self, params: Dict[str, Any],
                          seconds: float) -> Any:
        """A new connection in the backend's wrapper (connections.py),
        connected with ``params`` (callables called), its connect bounded
        by ``seconds`` where the driver has such a setting."""
        raise NotImplementedError

    def _checkin_state(self, conn: Any) -> str:
        """At check-in, from the driver's flags (no I/O): CLEAN, DIRTY
        (a reset job cleans it first) or BROKEN (replaced)."""
        raise NotImplementedError

    async def _reset_async(self, conn: Any) -> bool:
        """Clean a DIRTY connection (a cancel waited out, a transaction
        rolled back, the session reset); False: replace it."""
        raise NotImplementedError

    async def _ping_async(self, conn: Any) -> None:
        """A round trip; raises if the server did not answer."""
        raise NotImplementedError

    async def _close_async(self, conn: Any) -> None:
        await conn.close()

    def _abort(self, raw: Any) -> None:
        """Close the driver's connection ``raw`` without waiting."""
        raise NotImplementedError

    def _forget(self, conn: Any) -> None:
        """A connection of a loop that is gone: let go of it without
        touching its transport."""
