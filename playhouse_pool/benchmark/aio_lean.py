"""The lean asyncio reference: the least a FIFO pool under pwasyncio can cost.

peewee 4's ``playhouse.pwasyncio`` databases with their driver's pool
replaced by a deque of idle connections, a deque of waiting futures served
first come, first served by direct hand-off, and a count of open
connections. Nothing else: no liveness checks at checkout, no rollback or
reset at check-in, no ageing, no timeouts, no stats. Two things beyond
that, which no pool under pwasyncio can leave out without losing slots in
a cancellation storm: a waiter cancelled after it was handed a connection
passes the connection on; and a connection its driver reports closed (the
wrapper's ``stale()``, one attribute read: aiomysql closes a connection
whose query was cancelled) is not handed on at check-in: it is closed, and
its slot goes to a new connection, opened by the task checking in, if a
task waits (else that task would wait forever), or is freed. It is the
floor the asyncio benchmark measures a pool's cost against (as ``lean.py``
is for threads), not a pool to use.

Imports ``playhouse.pwasyncio``: peewee 4 and greenlet only (the benchmark
checks before it imports this).
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any, Deque, Dict

from playhouse import pwasyncio


class LeanAsyncPool:
    """Mixin, first in the bases, for a pwasyncio database class: the
    checkout under ``aconnect()`` and the check-in under ``aclose()`` (and
    under pwasyncio's release of a finished task's connection) are the
    deques'. ``max_connections`` (> 0) bounds the open connections; a task
    that finds none free waits, forever."""

    if TYPE_CHECKING:
        # The side of pwasyncio's database the backends' connects use.
        database: Any
        connect_params: Dict[str, Any]
        server_version: Any
        _timeout: Any

        async def register_adapters(self, conn: Any) -> None: ...
        async def _add_conn_hooks(self, conn: Any) -> None: ...
        def _extract_server_version(self, version: str) -> Any: ...

    def __init__(self, database: Any, max_connections: int,
                 **kwargs: Any) -> None:
        self._lean_max = max_connections
        self._lean_idle: Deque[Any] = deque()      # the last returned on top
        self._lean_waiters: Deque[asyncio.Future[Any]] = deque()
        self._lean_open = 0
        super().__init__(database, **kwargs)  # type: ignore[call-arg]

    async def _lean_connect(self) -> Any:
        """One new connection in pwasyncio's wrapper (per backend)."""
        raise NotImplementedError

    # pwasyncio's hooks: aconnect() calls the first, aclose() (and the
    # task-done release) the second, close_pool() the third.

    async def _acquire_conn_async(self) -> Any:
        if self._lean_idle:
            return self._lean_idle.pop()
        if self._lean_open < self._lean_max:
            self._lean_open += 1
            try:
                return await self._lean_connect()
            except BaseException:
                self._lean_open -= 1
                raise
        waiter = asyncio.get_running_loop().create_future()
        self._lean_waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            # Handed a connection in the same loop iteration as the cancel:
            # the task never sees it, so the next waiter gets it. (A
            # waiter cancelled before that stays in the deque, cancelled,
            # and the hand-off skips it.)
            if waiter.done() and not waiter.cancelled():
                self._lean_give(waiter.result())
            raise

    async def _release_conn(self, conn: Any) -> None:
        if not conn.stale():
            self._lean_give(conn)
            return
        waiters = self._lean_waiters
        while waiters and waiters[0].done():    # cancelled
            waiters.popleft()
        if not waiters:
            self._lean_open -= 1
        else:
            try:
                self._lean_give(await self._lean_connect())
            except BaseException:
                self._lean_open -= 1
                raise
        await conn.close()

    def _lean_give(self, conn: Any) -> None:
        while self._lean_waiters:
            waiter = self._lean_waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._lean_idle.append(conn)

    async def close_pool(self) -> None:
        """Close the idle connections (the benchmark's clean-up)."""
        idle, self._lean_idle = self._lean_idle, deque()
        self._lean_open -= len(idle)
        for conn in idle:
            await conn.close()

    def lean_counts(self) -> Dict[str, int]:
        return {'open': self._lean_open,
                'in_use': self._lean_open - len(self._lean_idle)}


class LeanAsyncPostgresqlDatabase(LeanAsyncPool,
                                  pwasyncio.AsyncPostgresqlDatabase):
    async def _lean_connect(self) -> Any:
        conn = await pwasyncio.asyncpg.connect(database=self.database,
                                               **self.connect_params)
        await self.register_adapters(conn)
        return pwasyncio.AsyncPostgresqlConnection(conn)


class LeanAsyncMySQLDatabase(LeanAsyncPool, pwasyncio.AsyncMySQLDatabase):
    async def _lean_connect(self) -> Any:
        conn = await pwasyncio.aiomysql.connect(
            db=self.database, autocommit=True, **self.connect_params)
        if self.server_version is None:
            self.server_version = self._extract_server_version(
                conn.get_server_info())
        return pwasyncio.AsyncMySQLConnection(conn)


class LeanAsyncSqliteDatabase(LeanAsyncPool, pwasyncio.AsyncSqliteDatabase):
    async def _lean_connect(self) -> Any:
        conn = await pwasyncio.aiosqlite.connect(
            self.database, isolation_level=None, timeout=self._timeout,
            **self.connect_params)
        await self._add_conn_hooks(conn)
        return pwasyncio.AsyncSqliteConnection(conn)


LEAN_ASYNC_CLASSES = {'postgres': LeanAsyncPostgresqlDatabase,
                      'mysql': LeanAsyncMySQLDatabase,
                      'sqlite': LeanAsyncSqliteDatabase}
