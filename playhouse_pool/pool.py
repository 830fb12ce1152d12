"""PooledDatabase: checkout, check-in, waiting, eviction and statistics.

How the pool keeps its promises (DESIGN.md's rules), in one place:

* One short lock (``_pool_lock``) guards the bookkeeping: the idle heap
  ``_connections``, the checked-out map ``_in_use``, the waiter queue and
  ``_reserved``, the count of slots taken by a connect or a close that is
  under way. Opening, probing, rolling back and closing a connection happen
  outside it, and peewee's database-wide ``_lock`` is never taken: the
  connection state it protects is per thread already.
* A slot is reserved under the lock before a connect and published under it
  after, so ``idle + in use + reserved`` never exceeds ``max_connections``
  and a close frees its slot only once the server has let go of it.
* A thread that must wait queues a ``_Waiter`` and sleeps on it. A returned
  connection, or a freed slot, goes straight to the first waiter: no polling,
  no thundering herd, first come first served.
"""
import heapq
import itertools
import logging
import math
import os
import random
import threading
import time
import traceback
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any, Deque, Dict, List, Optional, Tuple

import peewee
from peewee import InterfaceError, OperationalError

from ._options import PoolOptions, pop_options, seconds
from .context import ExecutionContext
from .errors import MaxConnectionsExceeded, PoolClosedError
from .events import PoolEvents
from .housekeeping import Housekeeper, tick_seconds
from ._probe import Probe, probe_for
from ._redact import redact

logger = logging.getLogger('playhouse_pool')

# peewee's base hook for each connect: it has no body, so the checkout path
# skips it unless a subclass (or the instance) gives it one.
_NO_INITIALIZE = getattr(peewee.Database, '_initialize_connection', None)

# peewee's context manager that turns driver errors into peewee's.
_driver_errors = peewee.__exception_wrapper__  # type: ignore[attr-defined]

if TYPE_CHECKING:
    # The mixin is always combined with a peewee Database: type it as one.
    _DatabaseBase = peewee.Database
else:
    _DatabaseBase = object

# Connect errors worth another attempt inside the deadline: the server is
# down, restarting or out of slots. Anything else (bad keyword, missing
# driver, bad credentials as ProgrammingError) surfaces at once. Told by the
# DB-API class names, as peewee maps driver errors: peewee 3.17 passes
# psycopg 3's own errors through unconverted.
_RETRYABLE_NAMES = frozenset(('OperationalError', 'InterfaceError'))


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, OSError) or any(
        cls.__name__ in _RETRYABLE_NAMES for cls in type(exc).__mro__)

_BACKOFF_FIRST = 0.05
_BACKOFF_CAP = 2.0


class _PoolConnection:
    """One connection's life in the pool (idle in the heap or checked out)."""
    __slots__ = ('conn', 'key', 'opened', 'returned', 'checked_out', 'owner',
                 'probe', 'stack', 'leak_reported', 'dirty')

    def __init__(self, conn: Any, probe: Optional[Probe]) -> None:
        now = time.monotonic()
        self.conn = conn
        self.key = id(conn)
        self.opened = now        # heap order and stale_timeout
        self.returned = now      # last check-in: ping_after and idle_timeout
        self.checked_out = now
        self.owner: Optional[threading.Thread] = None
        self.probe = probe       # readability of its socket, or None
        self.stack: Optional[List[str]] = None   # only with leak_timeout
        self.leak_reported = False
        self.dirty = False       # reclaimed: the next taker resets it first


class _Waiter:
    """A thread waiting for a connection. Exactly one of ``hand`` (a
    connection), ``grant`` (a free slot: open a new one) or ``fail`` is called
    on it, by whoever removed it from the queue under the pool lock."""
    __slots__ = ('_signal', 'record', 'error', 'owner', 'since')

    def __init__(self, owner: Optional[threading.Thread],
                 since: float) -> None:
        self._signal = threading.Lock()
        self._signal.acquire()
        self.record: Optional[_PoolConnection] = None    # None: a slot
        self.error: Optional[BaseException] = None
        self.owner = owner       # who holds what it is handed (None: shared)
        self.since = since       # the checkout's start: its deadline's too

    def wait(self, timeout: float) -> bool:
        if timeout >= threading.TIMEOUT_MAX:       # inf, or beyond the OS
            return self._signal.acquire()
        return self._signal.acquire(timeout=max(timeout, 0.0))

    def hand(self, record: _PoolConnection) -> None:
        self.record = record
        self._signal.release()

    def consume(self) -> None:
        self._signal.acquire(False)

    def grant(self) -> None:
        self._signal.release()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self._signal.release()


class _ThreadGuard:
    """Lives in a thread-local of the pool for each thread that checked a
    connection out. When the thread (or greenlet) ends, its locals are freed
    and this reclaims whatever the thread still held, at once: threads
    already waiting for a connection are not left waiting for nothing."""
    __slots__ = ('pool', 'thread', 'pid')

    def __init__(self, pool: 'PooledDatabase') -> None:
        self.pool = weakref.ref(pool)
        self.thread = threading.current_thread()
        self.pid = os.getpid()           # last: __del__ acts only if set

    def __del__(self) -> None:
        # Runs as the thread's locals are freed: at its exit, holding no pool
        # lock, or when a fork replaces the pool's thread-local. No I/O: the
        # connections go back marked dirty (see _reclaim_abandoned).
        if getattr(self, 'pid', None) != os.getpid():
            # A forked child: CPython frees the parent's other threads' state
            # before the at-fork hooks run; their pool lock may be held
            # forever. (No pid: a signal handler interrupted __init__.)
            return
        pool = self.pool()
        if pool is None:
            return
        if pool._pool_lock._is_owned():     # type: ignore[attr-defined]
            # The garbage collector freed this guard (it was in a reference
            # cycle) inside one of this thread's own pool operations: the
            # bookkeeping is mid-update. Its thread is gone, so the scan for
            # dead owners takes its connections back instead.
            return
        try:
            with pool._pool_lock:
                reclaimed = pool._reclaim_abandoned(self.thread)
            _log_reclaimed(reclaimed)
        except Exception:       # interpreter shutdown: nothing to save
            pass


class _LostTransactions(list):
    """A thread's transaction stack after close_all() closed the connection
    under it: its blocks still pop it as they unwind, but connect() will not
    go on inside them on a new connection."""


# Connections of a parent process, kept referenced in a forked child so that
# no driver destructor ever closes (or says goodbye on) the parent's sockets.
_inherited: List[Any] = []
_pools: 'weakref.WeakSet[PooledDatabase]' = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for pool in list(_pools):
        pool._forget_connections()


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class PooledDatabase(_DatabaseBase):
    """Mixin that gives a peewee ``Database`` class a connection pool.

    Combine it first: ``class MyDb(PooledDatabase, PostgresqlDatabase)``.
    ``connect()`` checks a connection out of the pool, ``close()`` checks it
    back in. The pool's keywords (``max_connections``, ``stale_timeout``,
    ``timeout``, ``min_connections``, ``idle_timeout``, ``ping_after``,
    ``max_waiting``, ``leak_timeout``, ``reset_session``) are documented in
    README.rst; the rest go to the peewee database.
    """

    if TYPE_CHECKING:
        # peewee's private side of Database that the pool builds on.
        _state: Any

        def _connect(self) -> Any: ...
        def _close(self, conn: Any) -> None: ...
        def _set_server_version(self, conn: Any) -> None: ...
        def _initialize_connection(self, conn: Any) -> None: ...

    def __init__(self, database: Any, **kwargs: Any) -> None:
        self._pool_options = PoolOptions().updated(pop_options(kwargs))
        self._pool_lock = threading.RLock()
        self._drained = threading.Condition(self._pool_lock)
        self._connections: List[Tuple[float, int, _PoolConnection]] = []
        self._in_use: Dict[int, _PoolConnection] = {}
        # Keys of connections the pool closed while a thread held them
        # (close_all, close_stale): that thread's close() must not put the
        # dead connection back. Maps key -> holder, so dead holders expire.
        self._closed_keys: Dict[int, Optional[threading.Thread]] = {}
        self._waiters: Deque[_Waiter] = deque()
        self._reserved = 0
        self._draining = 0
        # init() lowered max_connections below what is open: check-ins
        # close connections (and freed slots go unused) until it holds.
        self._shrinking = False
        self._heap_seq = itertools.count()
        self._housekeeper: Optional[Housekeeper] = None
        self._guards = threading.local()
        self._n_created = self._n_closed = self._n_checkouts = 0
        self._n_timeouts = self._n_reclaimed = 0
        self._wait_total = 0.0
        self._use_total = self._connect_total = 0.0
        self._n_connect_errors = 0
        self._events = PoolEvents()       # listeners: the metrics collectors
        _pools.add(self)
        super().__init__(database, **kwargs)

    def init(self, database: Any, **kwargs: Any) -> None:
        """peewee's deferred initialisation; accepts the pool's keywords too.
        A bad keyword raises before anything changes."""
        given = pop_options(kwargs)
        previous = self._pool_options
        options = previous.updated(given)
        self._check_database(database)
        super().init(database, **kwargs)
        self._pool_options = options
        excess: List[_PoolConnection] = []
        with self._pool_lock:
            if options.reset_session and not previous.reset_session:
                # The idle ones were checked in without a reset: they go.
                excess = [entry[2] for entry in self._connections]
                self._connections = []
            # A lower max_connections: idle connections over it close now,
            # checked-out ones as they come back.
            over = self._open_over_limit(len(excess))
            while over > 0 and self._connections:
                excess.append(heapq.heappop(self._connections)[2])
                over -= 1
            self._reserved += len(excess)
            self._shrinking = over > 0
            # A higher one: waiting threads get the new slots.
            while self._waiters and self._has_free_slot():
                self._reserved += 1
                self._next_waiter().grant()
        if excess:
            self._close_records(excess)
        if self._connections or self._in_use:
            self._start_housekeeping()

    def _check_database(self, database: Any) -> None:
        """Backends refuse a database the pool cannot share (SQLite memory)."""

    # -- Backend hooks -----------------------------------------------------
    # The pool opens with the database class's own _connect() and closes with
    # its _close(conn); backends override these four.

    def _is_closed(self, conn: Any) -> bool:
        """True if local state already says ``conn`` is dead (no I/O)."""
        return False

    def _fileno(self, conn: Any) -> Optional[int]:
        """The connection's socket, for the zero-timeout readability probe."""
        return None

    def _ping(self, conn: Any) -> bool:
        """A full round trip: True if the server answered."""
        return True

    def _can_reuse(self, conn: Any) -> bool:
        """Check-in: roll back an open transaction (and reset the session if
        ``reset_session``); False if the connection cannot go back."""
        return True

    # -- peewee's connection API --------------------------------------------

    def connect(self, reuse_if_open: bool = False) -> bool:
        """Check a connection out of the pool for this thread.

        Raises ``MaxConnectionsExceeded`` if none is free in time,
        ``OperationalError`` if no connection could be opened.
        """
        if self.deferred:
            raise InterfaceError('Error, database must be initialized '
                                 'before opening a connection.')
        state = self._state
        if not state.closed:
            if reuse_if_open:
                return False
            raise OperationalError('Connection already opened.')
        transactions = state.transactions
        if transactions and type(transactions) is _LostTransactions:
            # Going on in autocommit on a new connection would hide that
            # the transaction is gone.
            raise InterfaceError(
                "This thread's transaction lost its connection (close_all() "
                "closed it): leave the atomic() block first.")
        conn = self._checkout()
        try:
            blocks = state.ctx
            state.set_connection(conn)
            # Blocks still open go on on this connection: a
            # connection_context() whose connection the pool took away
            # (close_all, a fork), a manual_commit() entered while closed.
            if blocks:
                state.ctx = blocks
            if transactions:
                state.transactions = transactions
            if self.server_version is None:
                with _driver_errors:
                    self._set_server_version(conn)
            initialize = self._initialize_connection
            if getattr(initialize, '__func__', None) is not _NO_INITIALIZE:
                with _driver_errors:
                    initialize(conn)
        except BaseException:
            state.reset()
            self._discard_checked_out(conn)
            raise
        return True

    def close(self) -> bool:
        """Check this thread's connection back in (rolled back if a
        transaction was left open by raw SQL). False if none was open."""
        if self.deferred:
            raise InterfaceError('Error, database must be initialized '
                                 'before opening a connection.')
        state = self._state
        if state.transactions:
            raise OperationalError('Attempting to close database while '
                                   'transaction is open.')
        if state.closed:
            return False
        conn = state.conn
        state.reset()
        try:
            self._release(conn, self._reset(conn))
        except BaseException:          # interrupted mid-reset: don't keep it
            self._discard_checked_out(conn)
            raise
        return True

    def manual_close(self) -> bool:
        """Really close this thread's connection and free its slot."""
        if self.is_closed():
            return False
        if self.in_transaction():
            raise OperationalError('Attempting to close database while '
                                   'transaction is open.')
        conn = self._state.conn
        self._state.reset()
        self._discard_checked_out(conn)
        return True

    def execution_context(self, with_transaction: bool = True
                          ) -> ExecutionContext:
        """A block (``with``) or function (decorator) that runs on a pooled
        connection of its own, in a transaction unless ``with_transaction``
        is False; the thread's own connection state is left as it was."""
        return ExecutionContext(self, with_transaction)

    def dispose(self) -> None:
        """Forget every connection without closing any (they may belong to
        another process): the pool starts empty. Waiting threads get
        ``PoolClosedError``; connects under way still land in the pool."""
        with self._pool_lock:
            self._fail_waiters('The pool was disposed of while waiting.')
            records = [e[2] for e in self._connections]
            records += self._in_use.values()
            _inherited.extend(r.conn for r in records)
            self._connections = []
            self._in_use = {}
            self._closed_keys = {}
            self._notify_drained()
        self._state.reset()

    # -- Checkout -----------------------------------------------------------

    def _checkout(self) -> Any:
        start = time.monotonic()
        record = self._acquire(self._owner() if self.thread_safe else None,
                               start)
        if self._events.listeners:
            self._events.checkout(time.monotonic() - start)
        if self._pool_options.leak_timeout is not None:
            record.stack = _caller_stack()
        return record.conn

    def _owner(self) -> threading.Thread:
        """This thread, its guard in place. The guard is a local of this
        frame only: one that a traceback kept alive (an exception stored in
        a cycle) would keep the guard from reclaiming at thread exit."""
        guard = getattr(self._guards, 'guard', None)
        if guard is None:
            guard = self._guards.guard = _ThreadGuard(self)
        return guard.thread

    def _acquire(self, owner: Optional[threading.Thread],
                 start: float) -> _PoolConnection:
        now = start
        while True:
            record = waiter = reclaimed = None
            # ``with``, not acquire() then try: a signal handler that raises
            # between those two would leave the lock held for good.
            with self._pool_lock:
                # Read under the lock: init() publishes new options, then
                # hands new slots to the threads queued by then, under it.
                options = self._pool_options
                if self._draining:
                    raise PoolClosedError('The pool is shutting down '
                                          '(close_all is draining it).')
                heap = self._connections
                if (not heap and not self._waiters
                        and not self._has_free_slot()):
                    # Threads' guards reclaim at thread exit; this scan is
                    # the fallback, run by the first thread about to wait,
                    # not by each one queueing behind it: it costs an
                    # is_alive() per checked-out connection (8% of S2's
                    # throughput if run on every such checkout).
                    reclaimed = self._reclaim_abandoned()  # refills the heap
                if heap:
                    record = heapq.heappop(heap)[2]
                    self._take(record, owner, now)
                elif self._has_free_slot():
                    self._reserved += 1
                else:
                    waiter = self._enqueue_waiter(options, owner, now)
            if reclaimed:
                _log_reclaimed(reclaimed)
            if record is None or waiter is not None:
                deadline = _deadline(options, start)
                if waiter is not None:
                    record = self._wait(waiter, deadline)  # None: a slot
                if record is None:
                    return self._open_in_slot(deadline, owner)
            try:
                usable = self._verify(record, options, now)
            except BaseException:           # interrupted: give it back
                self._release(record.conn, False)
                raise
            if usable:
                return record
            # Dead or stale: close it and open a new one in its slot, unless
            # the pool took it back meanwhile (close_all): then start over.
            if self._retire(record):
                return self._open_in_slot(_deadline(options, start), owner)
            now = time.monotonic()

    def _take(self, record: _PoolConnection,
              owner: Optional[threading.Thread], now: float) -> None:
        # Under the pool lock: record becomes checked out by owner.
        record.checked_out = now
        record.owner = owner
        record.leak_reported = False
        self._in_use[record.key] = record
        self._n_checkouts += 1

    def _open_over_limit(self, extra: int) -> int:
        """Under the lock: by how much open connections and reserved slots,
        plus ``extra``, exceed max_connections (0 or less: they don't)."""
        limit = self._pool_options.max_connections
        if limit is None:
            return 0
        return (len(self._connections) + len(self._in_use) + self._reserved
                + extra - limit)

    def _still_shrinking(self, extra: int) -> bool:
        # Under the lock, while _shrinking: True if taking ``extra`` more
        # would exceed max_connections; clears _shrinking once it holds.
        if self._open_over_limit(extra) > 0:
            return True
        self._shrinking = False
        return False

    def _has_free_slot(self) -> bool:
        # Under the lock: room for one more connection or reserved slot.
        return self._open_over_limit(1) <= 0

    def _enqueue_waiter(self, options: PoolOptions,
                        owner: Optional[threading.Thread],
                        now: float) -> _Waiter:
        # Under the pool lock, with no idle connection and no free slot.
        if options.wait_seconds is None:
            self._n_timeouts += 1
            if self._events.listeners:
                self._events.timeout()
            raise MaxConnectionsExceeded(
                'Exceeded maximum connections (max_connections=%s, all in '
                'use; set timeout to wait for one).' % options.max_connections)
        if (options.max_waiting is not None
                and len(self._waiters) >= options.max_waiting):
            self._n_timeouts += 1
            if self._events.listeners:
                self._events.timeout()
            raise MaxConnectionsExceeded(
                'Exceeded maximum connections: max_waiting=%d threads are '
                'already waiting.' % options.max_waiting)
        waiter = _Waiter(owner, now)
        self._waiters.append(waiter)
        return waiter

    def _wait(self, waiter: _Waiter,
              deadline: Optional[float]) -> Optional[_PoolConnection]:
        """Sleep until handed a connection (returned) or a slot (None)."""
        assert deadline is not None        # waiters always have one
        try:
            signalled = waiter.wait(deadline - time.monotonic())
        except BaseException:              # a signal handler, gevent.Timeout
            self._abandon(waiter)
            raise
        if not signalled:
            with self._pool_lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                    self._n_timeouts += 1
                    self._wait_total += time.monotonic() - waiter.since
                    if self._events.listeners:
                        self._events.timeout()
                    raise MaxConnectionsExceeded(
                        'Exceeded maximum connections, timed out after %ss '
                        'waiting for a connection (max_connections=%s).'
                        % (self._pool_options.timeout,
                           self._pool_options.max_connections))
            # A hand-off raced the deadline: the waiter was served, and its
            # signal is released (under the lock, so by now).
            waiter.wait(math.inf)
        error = waiter.error
        if error is not None:
            # No cycle (error -> traceback -> this frame -> waiter -> error):
            # the frames it holds would outlive the exception's handling.
            waiter.error = None
            try:
                raise error
            finally:
                del error
        return waiter.record

    def _abandon(self, waiter: _Waiter) -> None:
        """A waiter leaves on an exception: out of the queue, or, if it was
        served meanwhile, what it was given goes on to the next one."""
        with self._pool_lock:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                return
        # Served: hand/grant/fail ran under the lock, so the result is set;
        # the interrupted acquire may or may not have taken the signal.
        waiter.consume()
        if waiter.record is not None:
            self._release(waiter.record.conn, True)
        elif waiter.error is None:
            with self._pool_lock:
                self._free_slots(1)

    def _verify(self, record: _PoolConnection, options: PoolOptions,
                now: float) -> bool:
        """Can this idle connection be handed out? Local flags, then one
        zero-timeout poll of its socket; a round trip only if the socket has
        something to say or the connection sat idle past ``ping_after``."""
        conn = record.conn
        if record.dirty:
            record.dirty = False
            if not self._reset(conn):
                return False
        if self._is_closed(conn):
            logger.debug('Connection %x was closed, discarding.', record.key)
            return False
        stale = options.stale_timeout
        if stale is not None and now - record.opened > stale:
            logger.debug('Connection %x is stale, recycling.', record.key)
            return False
        ping_after = options.ping_after
        idle_too_long = (ping_after is not None
                         and now - record.returned >= ping_after)
        if idle_too_long or (record.probe is not None
                             and record.probe.readable()):
            if not self._ping(conn):
                logger.info('Connection %x failed its ping, discarding.',
                            record.key)
                return False
        return True

    # -- Opening and closing (always outside the lock) ----------------------

    def _open_in_slot(self, deadline: Optional[float],
                      owner: Optional[threading.Thread]) -> _PoolConnection:
        """Open a connection in a slot this thread reserved; publish it as
        checked out. On failure the slot is freed (to a waiter, if any)."""
        try:
            conn, took = self._open(deadline)
        except BaseException:
            with self._pool_lock:
                self._free_slots(1)
            raise
        try:
            probe = probe_for(self._fileno(conn))
        except Exception:                  # no socket to probe: ping_after
            logger.debug('No readability probe for connection %x.', id(conn),
                         exc_info=True)
            probe = None
        record = _PoolConnection(conn, probe)
        with self._pool_lock:
            self._reserved -= 1
            self._n_created += 1
            self._connect_total += took
            self._take(record, owner, time.monotonic())
        if self._events.listeners:
            self._events.connected(took)
        logger.debug('Opened connection %x.', record.key)
        self._start_housekeeping()
        return record

    def _open(self, deadline: Optional[float]) -> Tuple[Any, float]:
        """Open a raw connection; with a deadline, retry failures with capped
        exponential backoff and jitter until it passes. Returns it and the
        seconds its (successful) attempt took."""
        attempt = 0
        while True:
            began = time.monotonic()
            try:
                with _driver_errors:
                    conn = self._connect()
                return conn, time.monotonic() - began
            except Exception as exc:
                with self._pool_lock:
                    self._n_connect_errors += 1
                if self._events.listeners:
                    self._events.connect_failed()
                if deadline is None or not _retryable(exc):
                    raise
                attempt += 1
                delay = min(_BACKOFF_CAP, _BACKOFF_FIRST * 2 ** (attempt - 1))
                delay *= random.uniform(0.5, 1.0)
                remaining = deadline - time.monotonic()
                if remaining <= delay:
                    raise OperationalError(
                        'playhouse_pool could not connect to %s in %d attempts'
                        ' within timeout=%s: %s' % (
                            redact(str(self.database)), attempt,
                            self._pool_options.timeout,
                            redact(_describe(exc)))) from exc
                logger.warning('Connect attempt %d to %s failed (%s); '
                               'retrying in %.2fs.', attempt,
                               redact(str(self.database)),
                               redact(_describe(exc)), delay)
                time.sleep(delay)

    def _close_raw(self, conn: Any) -> None:
        try:
            self._close(conn)
        except Exception:
            logger.debug('Error closing connection %x.', id(conn),
                         exc_info=True)

    def _reset(self, conn: Any) -> bool:
        """Check-in clean-up, outside the lock; never raises."""
        try:
            return self._can_reuse(conn)
        except Exception:
            logger.debug('Connection %x failed its reset.', id(conn),
                         exc_info=True)
            return False

    def _retire(self, record: _PoolConnection) -> bool:
        """Close a checked-out connection, keeping its slot reserved for the
        caller, who opens a replacement in it. False if the pool took the
        connection back meanwhile (close_all, close_stale): its slot is
        gone, nothing is reserved."""
        with self._pool_lock:
            if self._in_use.pop(record.key, None) is None:
                self._closed_keys.pop(record.key, None)
                return False
            self._reserved += 1
            self._notify_drained()
        self._close_raw(record.conn)
        with self._pool_lock:
            self._n_closed += 1
        if self._events.listeners:
            self._events.closed(1)
        return True

    def _free_slots(self, count: int) -> None:
        """Under the lock: give ``count`` reserved slots to waiters (first
        come, first served) or back to the pool."""
        for _ in range(count):
            if self._waiters and not (self._shrinking
                                      and self._still_shrinking(0)):
                self._next_waiter().grant()
            else:
                self._reserved -= 1

    # -- Check-in -----------------------------------------------------------

    def _discard_checked_out(self, conn: Any) -> None:
        self._release(conn, False)

    def _release(self, conn: Any, reusable: bool) -> None:
        """Return a checked-out connection: to the first waiter, to the idle
        heap, or (broken or stale) closed, freeing its slot."""
        now = time.monotonic()
        stale = self._pool_options.stale_timeout
        with self._pool_lock:
            record = self._in_use.pop(id(conn), None)
            if record is None:
                # Closed by the pool while held (close_all, close_stale).
                self._closed_keys.pop(id(conn), None)
                return
            use = now - record.checked_out
            self._use_total += use
            if self._events.listeners:
                self._events.checkin(use)
            if (reusable and (stale is None or now - record.opened <= stale)
                    and not (self._shrinking and self._still_shrinking(1))):
                record.returned = now
                self._give_back(record, now)
                return
            self._reserved += 1
            self._notify_drained()
        self._close_records([record])

    def _give_back(self, record: _PoolConnection, now: float) -> None:
        # Under the lock: a usable connection goes to the first waiter, or
        # to the idle heap if nobody waits.
        record.stack = None
        if self._waiters:
            waiter = self._next_waiter()
            self._take(record, waiter.owner, now)
            waiter.hand(record)
        else:
            heapq.heappush(self._connections,
                           (record.opened, next(self._heap_seq), record))
        self._notify_drained()

    def _notify_drained(self) -> None:
        # Under the lock, whenever _in_use shrinks: close_all(timeout) may
        # be waiting for it to empty.
        if self._draining and not self._in_use:
            self._drained.notify_all()

    # -- Reclaiming what threads abandoned -----------------------------------

    def _reclaim_abandoned(self, ended: Optional[threading.Thread] = None
                           ) -> List[Tuple[int, str]]:
        """Under the lock: take back connections held by a thread that ended
        without close() (``ended``, from its guard; or any dead owner, before
        a checkout would wait or fail). They go back as if returned, marked
        dirty: whoever takes one next rolls it back first, outside the lock.
        Returns (connection, thread name) pairs for the caller to log once
        the lock is released."""
        def gone(thread: Optional[threading.Thread]) -> bool:
            if ended is not None:
                return thread is ended
            return thread is not None and not thread.is_alive()

        dead = [r for r in self._in_use.values() if gone(r.owner)]
        # Named now: _give_back may hand a record to a waiter (a new owner).
        names = [(r.key, _thread_name(r)) for r in dead]
        for record in dead:
            del self._in_use[record.key]
            record.dirty = True
            self._n_reclaimed += 1
            now = time.monotonic()
            use = now - record.checked_out
            self._use_total += use
            if self._events.listeners:
                self._events.checkin(use)
            self._give_back(record, now)
        for key, holder in list(self._closed_keys.items()):
            if gone(holder):
                del self._closed_keys[key]
        return names

    # -- Pool-wide operations -----------------------------------------------

    def close_idle(self) -> int:
        """Close every idle connection; returns how many."""
        with self._pool_lock:
            idle = [entry[2] for entry in self._connections]
            self._connections = []
            self._reserved += len(idle)
        self._close_records(idle)
        return len(idle)

    def close_stale(self, age: float = 600) -> int:
        """Close connections checked out more than ``age`` seconds ago (their
        holders' later ``close()`` is a no-op); returns how many."""
        cutoff = time.monotonic() - (seconds('age', age) or 0.0)
        with self._pool_lock:
            stale = [r for r in self._in_use.values()
                     if r.checked_out < cutoff]
            self._take_back(stale)
        self._close_records(stale)
        return len(stale)

    def close_all(self, timeout: Optional[float] = None) -> int:
        """Close every connection, idle and checked out, and fail waiting
        threads with ``PoolClosedError``. With ``timeout`` (seconds), first
        refuse new checkouts and wait up to that long for checked-out
        connections to come back. The calling thread's own connection is
        closed too. The pool stays usable: the next checkout opens a new
        connection. Returns how many connections were closed."""
        wait = seconds('timeout', timeout) or 0.0
        state = self._state
        own_key = None if state.closed else id(state.conn)
        # Only the connection goes: peewee's context and transaction stacks
        # stay, so a connection_context() or atomic() that this call
        # interrupts (a signal handler) unwinds normally afterwards; an open
        # transaction is marked lost (see connect()).
        if own_key is not None and state.transactions:
            state.transactions = _LostTransactions(state.transactions)
        state.closed, state.conn = True, None
        records: List[_PoolConnection] = []
        held: List[_PoolConnection] = []
        try:
            with self._pool_lock:
                # The caller's own connection is not waited for: it goes now.
                own = self._in_use.pop(own_key, None) if own_key else None
                if own is not None:
                    records.append(own)
                    self._reserved += 1
                self._fail_waiters(
                    'The pool was closed (close_all) while waiting.')
                if wait:
                    self._draining += 1
                    try:
                        self._drained.wait_for(
                            lambda: not self._in_use,
                            wait if wait < threading.TIMEOUT_MAX else None)
                    finally:
                        self._draining -= 1
                idle = [entry[2] for entry in self._connections]
                self._connections = []
                self._reserved += len(idle)
                records += idle
                held = list(self._in_use.values())
                self._take_back(held)
        finally:                # even if the drain is interrupted
            self._close_records(records + held)
        return len(records) + len(held)

    def _take_back(self, held: List[_PoolConnection]) -> None:
        # Under the lock: the pool closes these while threads hold them.
        for record in held:
            del self._in_use[record.key]
            self._closed_keys[record.key] = record.owner
        self._reserved += len(held)
        self._notify_drained()

    def _close_records(self, records: List[_PoolConnection]) -> None:
        for record in records:
            self._close_raw(record.conn)
        with self._pool_lock:
            self._n_closed += len(records)
            self._free_slots(len(records))
        if records and self._events.listeners:
            self._events.closed(len(records))

    def _next_waiter(self) -> _Waiter:
        # Under the lock: the first waiter leaves the queue, served now.
        waiter = self._waiters.popleft()
        self._wait_total += time.monotonic() - waiter.since
        return waiter

    def _fail_waiters(self, message: str) -> None:
        # Each gets its own exception: one shared would chain every waiter's
        # traceback (and frames) to every other's.
        while self._waiters:
            self._next_waiter().fail(PoolClosedError(message))

    def _forget_connections(self) -> None:
        """In a forked child: drop all bookkeeping without closing anything
        (the parent's connections stay referenced, never closed or used),
        with new locks (another thread of the parent may have held them)."""
        self._pool_lock = threading.RLock()
        self._drained = threading.Condition(self._pool_lock)
        records = [e[2] for e in self._connections] + list(
            self._in_use.values())
        _inherited.extend(r.conn for r in records)
        self._connections = []
        self._in_use = {}
        self._closed_keys = {}
        self._waiters = deque()
        self._reserved = 0
        self._draining = 0
        self._shrinking = False
        self._housekeeper = None
        self._guards = threading.local()
        # The forking thread's connection was the parent's: it goes, and so
        # do its transactions (the child, a multiprocessing worker say, runs
        # its own). peewee's context stack stays: a connection_context() the
        # fork happened in unwinds in the child.
        state = self._state
        state.closed, state.conn, state.transactions = True, None, []

    def pool_stats(self) -> Dict[str, Any]:
        """A snapshot of the pool, cheap enough to call per request.

        ``open == in_use + idle``; ``created``, ``closed``, ``checkouts``,
        ``timeouts``, ``reclaimed``, ``wait_seconds`` (total seconds threads
        spent waiting), ``use_seconds`` (total seconds connections were held,
        counted at check-in), ``connect_seconds`` (total seconds the connects
        that succeeded took) and ``connect_errors`` (failed connect attempts,
        retries included) only grow.
        """
        with self._pool_lock:
            idle = len(self._connections)
            in_use = len(self._in_use)
            return {
                'max_connections': self._pool_options.max_connections or 0,
                'open': idle + in_use,
                'in_use': in_use,
                'idle': idle,
                'waiting': len(self._waiters),
                'created': self._n_created,
                'closed': self._n_closed,
                'checkouts': self._n_checkouts,
                'timeouts': self._n_timeouts,
                'reclaimed': self._n_reclaimed,
                'wait_seconds': self._wait_total,
                'use_seconds': self._use_total,
                'connect_seconds': self._connect_total,
                'connect_errors': self._n_connect_errors,
            }

    def __repr__(self) -> str:
        stats = self.pool_stats()
        return '<%s %r open=%d in_use=%d idle=%d max_connections=%s>' % (
            type(self).__name__, redact(str(self.database)), stats['open'],
            stats['in_use'], stats['idle'], stats['max_connections'] or None)

    # -- Housekeeping (idle eviction and leak warnings) ---------------------

    def _start_housekeeping(self) -> None:
        options = self._pool_options
        if self._housekeeper is not None or (options.idle_timeout is None and
                                             options.leak_timeout is None):
            return
        with self._pool_lock:
            if self._housekeeper is not None:
                return
            self._housekeeper = Housekeeper(self)
        self._housekeeper.start()

    def _housekeep(self) -> float:
        """One round of the housekeeper; returns seconds until the next."""
        options = self._pool_options
        if options.idle_timeout is not None:
            self._evict_idle(options.idle_timeout, options.min_connections)
        if options.leak_timeout is not None:
            self._report_leaks(options.leak_timeout)
        with self._pool_lock:
            reclaimed = self._reclaim_abandoned()
        _log_reclaimed(reclaimed)
        return tick_seconds(options.idle_timeout, options.leak_timeout)

    def _evict_idle(self, idle_timeout: float, keep: int) -> int:
        """Close connections idle longer than ``idle_timeout``, never taking
        the pool below ``keep`` open connections."""
        cutoff = time.monotonic() - idle_timeout
        with self._pool_lock:
            spare = (len(self._connections) + len(self._in_use)
                     + self._reserved - keep)
            expired = sorted((e for e in self._connections
                              if e[2].returned < cutoff),
                             key=lambda e: e[2].returned)[:max(spare, 0)]
            if not expired:
                return 0
            gone = {id(e) for e in expired}
            self._connections = [e for e in self._connections
                                 if id(e) not in gone]
            heapq.heapify(self._connections)
            self._reserved += len(expired)
        logger.debug('Closing %d connection(s) idle for over %.3gs.',
                     len(expired), idle_timeout)
        self._close_records([e[2] for e in expired])
        return len(expired)

    def _report_leaks(self, leak_timeout: float) -> None:
        cutoff = time.monotonic() - leak_timeout
        with self._pool_lock:
            leaked = [r for r in self._in_use.values()
                      if r.checked_out < cutoff and not r.leak_reported]
            for record in leaked:
                record.leak_reported = True
        for record in leaked:
            logger.warning(
                'Connection %x has been checked out by thread %r for over '
                '%.3gs (leak_timeout); checked out at:\n%s', record.key,
                _thread_name(record), leak_timeout,
                ''.join(record.stack or ['(stack not recorded)\n']))


def _deadline(options: PoolOptions, start: float) -> Optional[float]:
    wait = options.wait_seconds
    return None if wait is None else start + wait


def _describe(exc: BaseException) -> str:
    return '%s: %s' % (type(exc).__name__, str(exc).strip())


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _caller_stack() -> List[str]:
    """Where the application checked the connection out (our frames and
    peewee's connect() plumbing left out)."""
    frames = [f for f in traceback.extract_stack(limit=32)
              if not f.filename.startswith(_PACKAGE_DIR)]
    return traceback.format_list(frames[-12:])


def _log_reclaimed(reclaimed: List[Tuple[int, str]]) -> None:
    for key, thread in reclaimed:
        logger.warning('Reclaimed connection %x from thread %r, which ended '
                       'without closing it.', key, thread)


def _thread_name(record: _PoolConnection) -> str:
    return record.owner.name if record.owner is not None else '?'
