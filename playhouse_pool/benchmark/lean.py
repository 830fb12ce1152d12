"""The lean reference: the least a FIFO pool on peewee can cost.

A lock, a stack of idle connections, a queue of waiters served first come,
first served by direct hand-off, and peewee's per-thread state. Nothing
else: no liveness checks, no rollback at check-in, no stats, no timeouts,
no guards, no fork safety. It is the floor the benchmark measures our own
per-checkout cost against (S1, S2), not a pool to use.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Deque, List, Optional

import peewee


class _Waiter:
    """One waiting thread: blocks on a held lock until a connection is
    handed to it (a bare lock is the cheapest wake-up Python has)."""
    __slots__ = ('ready', 'conn')

    def __init__(self) -> None:
        self.ready = threading.Lock()
        self.ready.acquire()
        self.conn: Any = None


if TYPE_CHECKING:
    # The mixin is always combined with a peewee Database: type it as one.
    _DatabaseBase = peewee.Database
else:
    _DatabaseBase = object


class LeanPool(_DatabaseBase):
    """Mixin for a peewee database class, first in the bases (``class
    LeanPostgresqlDatabase(LeanPool, PostgresqlDatabase)``): ``connect()``
    checks out, ``close()`` checks in. ``max_connections`` (> 0) bounds the
    open connections; a thread that finds none free waits, forever."""

    if TYPE_CHECKING:
        # peewee's private side of Database that the pool builds on.
        _state: Any

        def _connect(self) -> Any: ...
        def _close(self, conn: Any) -> None: ...
        def _set_server_version(self, conn: Any) -> None: ...
        def _initialize_connection(self, conn: Any) -> None: ...

    def __init__(self, database: Any, max_connections: int,
                 **kwargs: Any) -> None:
        self._max = max_connections
        self._lean_lock = threading.Lock()
        self._idle: List[Any] = []          # the last returned on top
        self._waiters: Deque[_Waiter] = deque()
        self._open = 0
        super().__init__(database, **kwargs)

    def connect(self, reuse_if_open: bool = False) -> bool:
        if not self._state.closed:
            if reuse_if_open:
                return False
            raise peewee.OperationalError('Connection already opened.')
        self._state.set_connection(self._lean_checkout())
        return True

    def close(self) -> bool:
        if self._state.closed:
            return False
        conn = self._state.conn
        self._state.reset()
        self._lean_checkin(conn)
        return True

    def close_all(self) -> None:
        """Close the idle connections (the benchmark's clean-up)."""
        with self._lean_lock:
            idle, self._idle = self._idle, []
            self._open -= len(idle)
        for conn in idle:
            self._close(conn)

    def _lean_checkout(self) -> Any:
        waiter: Optional[_Waiter] = None
        with self._lean_lock:
            if self._idle:
                return self._idle.pop()
            if self._open < self._max:
                self._open += 1
            else:
                waiter = _Waiter()
                self._waiters.append(waiter)
        if waiter is not None:
            waiter.ready.acquire()
            return waiter.conn
        return self._lean_open()

    def _lean_open(self) -> Any:
        # Outside the lock: a connect delays no other checkout.
        try:
            conn = self._connect()
            if self.server_version is None:
                self._set_server_version(conn)
            self._initialize_connection(conn)
        except BaseException:
            with self._lean_lock:
                self._open -= 1
            raise
        return conn

    def _lean_checkin(self, conn: Any) -> None:
        with self._lean_lock:
            if self._waiters:
                waiter = self._waiters.popleft()
                waiter.conn = conn
                waiter.ready.release()
                return
            self._idle.append(conn)


class LeanPostgresqlDatabase(LeanPool, peewee.PostgresqlDatabase):
    pass


class LeanMySQLDatabase(LeanPool, peewee.MySQLDatabase):
    pass


class LeanSqliteDatabase(LeanPool, peewee.SqliteDatabase):
    pass


LEAN_CLASSES = {'postgres': LeanPostgresqlDatabase,
                'mysql': LeanMySQLDatabase, 'sqlite': LeanSqliteDatabase}
