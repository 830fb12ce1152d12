"""PooledDatabase: peewee's face of the pool.

The rooms behind it, each with one job:

* ``ledger.py``: the bookkeeping (idle heap, checked-out map, reserved
  slots, waiters) under one lock, with no I/O; the one place a returned
  connection goes to a waiter.
* ``workers.py``: who opens, closes, pings and resets connections (pool
  workers, never the thread of a request), the housekeeper that ages,
  keeps alive, evicts and refills, and the watchdog that ends the pool's own
  I/O at its deadline.
* ``guards.py``: thread guards that reclaim a dead thread's connection, and
  the fork handler.
* ``opening.py``: opening one connection, as a worker does (callable
  connect keywords, ``configure``, the probe), and messages without secrets.

This class turns peewee's calls (connect, close, init, close_all, ...) into
ledger operations, runs the cheap checks a checkout needs on the request's
thread (status flags and a zero-timeout socket poll: no round trip), and
hands the rest to the workers.
"""
import logging
import math
import os
import threading
import time
import traceback
from typing import (TYPE_CHECKING, Any, ClassVar, Dict, List, Optional,
                    Tuple)

import peewee
import playhouse
from peewee import InterfaceError, OperationalError

from . import guards
from ._options import IO_GRACE, PoolOptions, pop_options, seconds
from ._redact import redact
from .context import ExecutionContext
from .errors import pool_exhausted
from .events import PoolEvents
from .ledger import Ledger
from .opening import ConnectionOpening, _driver_errors
from .records import Jobs, PoolConnection, Waiter, wall_clock
from .recovery import UNPROVEN, FirstStatementRecovery
from .workers import (Housekeeper, Socket, Watch, Watchdog, Workers,
                      housekeep, log_reclaimed, socket_of)

logger = logging.getLogger('playhouse_pool')

# A checkout's ping (ping_after=0) may take this long at least, whatever is
# left of its timeout.
_SHORTEST_PING = 0.25

# peewee's base hook for each connect: it has no body, so the checkout path
# skips it unless a subclass (or the instance) gives it one.
_NO_INITIALIZE = getattr(peewee.Database, '_initialize_connection', None)


class PooledDatabase(ConnectionOpening, FirstStatementRecovery):
    """Mixin that gives a peewee ``Database`` class a connection pool.

    Combine it first: ``class MyDb(PooledDatabase, PostgresqlDatabase)``.
    ``connect()`` checks a connection out of the pool, ``close()`` checks it
    back in. The pool's keywords (``max_connections``, ``stale_timeout``,
    ``timeout``, ``min_connections``, ``idle_timeout``, ``ping_after``,
    ``max_waiting``, ``leak_timeout``, ``reset_session``, ``configure``) are
    documented in README.rst; the rest go to the peewee database. Any
    connect keyword may be a zero-argument callable (a rotating password,
    say): it is called for each new connection, on a pool worker.

    The mixin's contract is peewee's hooks, and nothing else about the
    connection objects: ``_connect()`` and ``_close(conn)`` open and close
    one (on pool workers), ``_is_closed(conn)`` tells a dead one by local
    flags (no I/O), ``_can_reuse(conn)`` cleans one at check-in (False:
    close it), ``conn_key(conn)`` names one. A backend adds what its driver
    can tell cheaply: ``_fileno(conn)`` (the socket, for the zero-timeout
    readability probe, and for cutting short the pool's own I/O on a silent
    connection), ``_ping(conn)`` (a round trip that never reconnects) and
    ``_connect_timeouts(params, seconds)`` (the driver's keywords that end a
    silent connect); see backends.py. Combined by hand with a peewee database
    of a family this package knows (``class P(PooledDatabase,
    PostgresqlDatabase)``, MySQL, SQLite, APSW, ...), the class is given
    that family's hooks, as if it had been declared with this package's
    class for it: its own overrides still come first.
    """

    # 'module.QualName' of a peewee database class -> the hooks of its
    # family (backends.py registers them; see __init_subclass__).
    _families: ClassVar[Dict[str, type]] = {}

    if TYPE_CHECKING:
        # peewee's private side of Database that the pool builds on.
        _state: Any

        def _connect(self) -> Any: ...
        def _close(self, conn: Any) -> None: ...
        def _set_server_version(self, conn: Any) -> None: ...
        def _initialize_connection(self, conn: Any) -> None: ...

    def __init__(self, database: Any, **kwargs: Any) -> None:
        self._pool_options = PoolOptions().updated(pop_options(kwargs))
        self._events = PoolEvents()       # listeners: the metrics collectors
        self._ledger = Ledger(self._pool_options, self._events)
        self._workers: Optional[Workers] = None
        self._housekeeper: Optional[Housekeeper] = None
        self._watchdog = Watchdog()
        # Reentrant, as the ledger's lock: close_all() may run in a signal
        # handler that interrupted this thread while it held it.
        self._start_lock = threading.RLock()
        self._guards = threading.local()
        self._init_opening()
        guards.track(self)
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
        self._submit(self._ledger.reconfigure(
            options, discard_idle=options.reset_session
            and not previous.reset_session))
        if self._housekeeper is not None:
            self._housekeeper.wake()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A hand-made composition, PooledDatabase itself among its bases:
        # that base becomes the hooks of the database's family (a subclass
        # of PooledDatabase), so the class is what this package would have
        # declared (PooledDatabase, PostgresqlDatabase) as.
        if PooledDatabase in cls.__bases__:
            hooks = _family_hooks(cls)
            if hooks is not None:
                cls.__bases__ = tuple(hooks if base is PooledDatabase
                                      else base for base in cls.__bases__)
        super().__init_subclass__(**kwargs)

    @classmethod
    def _register_family(cls, database_class: str, hooks: type) -> None:
        """Hand-made compositions with ``database_class`` ('module.Name')
        or a subclass of it get ``hooks`` (backends.py)."""
        PooledDatabase._families[database_class] = hooks

    def _check_database(self, database: Any) -> None:
        """Backends refuse a database the pool cannot share (SQLite memory)."""

    # peewee's pool attributes (health checks read them), with peewee's
    # meanings: read-only views of the options, which init() updates.
    @property
    def _max_connections(self) -> Optional[int]:
        """max_connections; None: unlimited."""
        return self._pool_options.max_connections

    @property
    def _stale_timeout(self) -> Optional[float]:
        return self._pool_options.stale_timeout

    @property
    def _wait_timeout(self) -> Optional[float]:
        """timeout, as peewee keeps it: None, or seconds (0 reads as inf)."""
        return self._pool_options.wait_seconds

    # What people introspect (as with peewee's pool), and the tests.
    @property
    def _connections(self) -> List[Tuple[float, int, Any]]:
        """The idle connections, as peewee shows them: (when opened, as
        ``time.time()``, a tie-breaker, the connection), in heap order. A
        snapshot: the pool's own heap holds its records."""
        return [(wall_clock(opened), seq, record.conn)
                for opened, seq, record in self._ledger.idle]

    @property
    def _in_use(self) -> Dict[int, PoolConnection]:
        return self._ledger.in_use

    @property
    def _pool_lock(self) -> Any:
        return self._ledger.lock

    @property
    def _reserved(self) -> int:
        """Slots held by a connect, close, ping or reset under way."""
        return self._ledger.reserved

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
        ``reset_session``); False if the connection cannot go back.

        This default knows what any connection may show: a transaction flag
        (``in_transaction``: sqlite3, apsw, cysqlite, ...) says whether to
        roll back (``rollback()``, else a ROLLBACK through its cursor, as
        peewee itself sends statements); with no flag, a DB-API
        ``rollback()`` is always right (a round trip); an object with
        neither is trusted, as peewee's pool trusts it. With
        ``reset_session`` a new connection is the reset. A rollback is
        bounded by the pool's deadline (rule 9) where ``_fileno`` shows the
        socket."""
        if self._pool_options.reset_session:
            return False
        flag = getattr(conn, 'in_transaction', None)
        if isinstance(flag, bool):
            if flag:
                rollback = getattr(conn, 'rollback', None)
                with self._bounded(conn) as watch:
                    if callable(rollback):
                        rollback()
                    else:
                        conn.cursor().execute('ROLLBACK')
                return not watch.cut and not conn.in_transaction
            return True
        rollback = getattr(conn, 'rollback', None)
        if callable(rollback):
            with self._bounded(conn) as watch:
                rollback()
            return not watch.cut
        return True

    def conn_key(self, conn: Any) -> Any:
        """peewee's hook: the key a connection is known by (in ``_in_use``)."""
        return id(conn)

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
        if transactions and type(transactions) is guards.LostTransactions:
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
        record = self._ledger.detach(self.conn_key(conn))
        if record is not None:
            self._close_raw(conn)
            self._submit(self._ledger.closed_by_caller(1))
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
        self._ledger.fail_waiters('The pool was disposed of while waiting.')
        guards.inherited.extend(r.conn for r in self._ledger.forget())
        self._state.reset()

    # -- Checkout -----------------------------------------------------------

    def _checkout(self) -> Any:
        owner = guards.owner(self) if self.thread_safe else None
        now = time.monotonic()
        got = self._ledger.checkout(owner, now, now)
        if type(got) is not PoolConnection:
            got = self._checkout_slowly(owner, now, got)
        elif not self._usable(got, now, now):  # handed to a worker
            got = self._checkout_slowly(owner, now, None)
        if self._pool_options.leak_timeout is not None:
            got.stack = _caller_stack()
        # A connection that sat idle may have died unseen: its first
        # statement is watched (recovery.py); a new one has just proven
        # itself.
        self._state.pool_proven = got.conn if got.fresh else UNPROVEN
        events = self._events
        if events.listeners:
            events.checkout(time.monotonic() - now)
        return got.conn

    def _checkout_slowly(self, owner: Optional[threading.Thread],
                         start: float, got: Any) -> PoolConnection:
        """No usable idle connection at once: start the workers if they are
        not running, then wait for whichever comes first, a connection
        checked in or a new one (the ledger started a connect if none was
        on its way), checking each as it comes."""
        self._start()
        while True:
            if type(got) is Waiter:
                log_reclaimed(got.reclaimed)
                self._submit(got.jobs)
                got = self._wait(got)
            elif got is None:             # the last one failed its checks
                got = self._ledger.checkout(owner, time.monotonic(), start,
                                            True)
                continue
            if self._usable(got, time.monotonic(), start):
                return got
            got = None

    def _usable(self, record: PoolConnection, now: float,
                start: float) -> bool:
        """May this connection, just checked out (by a checkout that began
        at ``start``), be handed to the user? Its local status flags, its
        age, and one zero-timeout poll of its socket (readable: the server
        said something, an error or EOF, on an idle connection): no round
        trip, unless ``ping_after=0`` asks for one. One that fails goes to
        a worker to be replaced (or pinged), and the checkout looks
        again."""
        try:
            conn = record.conn
            if self._is_closed(conn):
                logger.debug('Connection %x was closed, replacing it.',
                             record.key)
            elif now >= record.expires and not self._ledger.keep_expired(
                    record, now):
                logger.debug('Connection %x is past its age, replacing it.',
                             record.key)
            elif self._pool_options.ping_after == 0:
                if self._answers(conn, start):
                    return True
                logger.info('Connection %x failed its ping, replacing it.',
                            record.key)
            elif record.probe is not None and record.probe.readable():
                self._submit(self._ledger.check_later(record))
                return False
            else:
                return True
        except BaseException:              # interrupted: give it back
            self._release(record.conn, False)
            raise
        self._submit(self._ledger.retire(record, now))
        return False

    def _answers(self, conn: Any, start: float) -> bool:
        """``ping_after=0``'s round trip at checkout, cut short at the
        pool's deadline for its own I/O or the checkout's, whichever comes
        first (rule 9); a checkout at its deadline still gets a moment."""
        options = self._pool_options
        limit = options.io_seconds
        wait = options.wait_seconds
        if wait is not None:
            limit = min(limit, max(start + wait - time.monotonic(),
                                   _SHORTEST_PING))
        with self._watchdog.watch(self._socket(conn), limit) as watch:
            alive = self._ping(conn)
        return alive and not watch.cut

    def _timed_out(self, awaited: str) -> str:
        """Why a waiter gave up, for its MaxConnectionsExceeded: what it
        waited for (the ledger's few words) and for how long it might."""
        timeout = self._pool_options.timeout
        if timeout is None:
            return ('timed out waiting for %s (timeout=None: one connect '
                    'attempt, %.3gs)' % (awaited, self._pool_options.io_seconds
                                         + IO_GRACE))
        return 'timed out waiting for %s within timeout=%ss' % (awaited,
                                                                timeout)

    def _wait(self, waiter: Waiter) -> Optional[PoolConnection]:
        """Sleep until handed a connection or failed, or until the deadline
        (rule 9). Without a ``timeout`` the thread waits only when a connect
        was started for it (or something else is on its way to it): for as
        long as one connect attempt may take, plus a little."""
        deadline = waiter.deadline
        if deadline is None:
            deadline = (waiter.since + self._pool_options.io_seconds
                        + IO_GRACE)
        timeout = deadline - time.monotonic()
        try:
            signalled = waiter.wait(timeout)
        except BaseException:              # a signal handler, gevent.Timeout
            record = self._ledger.abandon(waiter)
            if record is not None:
                self._release(record.conn, True)
            raise
        if not signalled:
            now = time.monotonic()
            gave_up, failing, dry, awaited = self._ledger.timed_out(
                waiter, now)
            if gave_up:
                if failing is not None:
                    raise self._could_not_connect(failing)
                assert dry is not None
                raise pool_exhausted(self._timed_out(awaited),
                                     now - waiter.since, dry)
            # Served as the deadline came: its signal is released, under
            # the lock, so by now.
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

    # -- Workers ------------------------------------------------------------

    def _start(self) -> None:
        """From the first checkout on (and again after close_all or in a
        forked child): workers, the housekeeper, the minimum opened."""
        # Until both hold: a close_all() in a signal handler that lands in
        # here stops what this started, and it starts again.
        while not (self._ledger.started and self._housekeeper is not None):
            self._start_once()

    def _start_once(self) -> None:
        with self._start_lock:
            if self._workers is None:
                self._workers = Workers(self)
            if self._housekeeper is None:
                # Recorded once running: a KeyboardInterrupt in start()
                # leaves none, and the next checkout starts one.
                housekeeper = Housekeeper(self)
                self._watchdog.wake = housekeeper.wake
                try:
                    housekeeper.start()
                except BaseException:   # it may be running: not twice
                    housekeeper.stop()
                    raise
                self._housekeeper = housekeeper
            self._submit(self._ledger.start())

    def _submit(self, jobs: Jobs) -> None:
        if jobs:
            workers = self._workers
            if workers is None:
                with self._start_lock:
                    workers = self._workers
                    if workers is None:
                        # One read: a close_all() in a signal handler may
                        # set the attribute to None right after.
                        workers = self._workers = Workers(self)
            workers.submit(jobs)

    def _stop_workers(self) -> None:
        with self._start_lock:
            workers, self._workers = self._workers, None
            housekeeper, self._housekeeper = self._housekeeper, None
        if workers is not None:
            workers.stop()
        if housekeeper is not None:
            housekeeper.stop()

    def _housekeep(self) -> float:
        """One round of the housekeeper (as its thread runs it); returns
        seconds until the next."""
        return housekeep(self)

    def _bounded(self, conn: Any) -> Watch:
        """A watch over the pool's own I/O on ``conn`` (rule 9), to be
        entered on the thread that does it: past ``io_seconds`` its socket
        is shut down, so the driver call fails. ``with
        self._bounded(conn) as watch: ...``, then ``watch.cut``."""
        return self._watchdog.watch(self._socket(conn),
                                    self._pool_options.io_seconds)

    def _socket(self, conn: Any) -> Optional[Socket]:
        """``conn``'s socket, for the watchdog to shut down; None if it
        shows none."""
        try:
            return socket_of(self._fileno(conn))
        except Exception:
            return None

    def _reset(self, conn: Any) -> bool:
        """Check-in clean-up, outside the lock, its round trips within the
        pool's deadline (backends watch them); never raises."""
        try:
            return self._can_reuse(conn)
        except Exception:
            logger.debug('Connection %x failed its reset.', id(conn),
                         exc_info=True)
            return False

    # -- Check-in -----------------------------------------------------------

    def _release(self, conn: Any, reusable: bool) -> None:
        """Return a checked-out connection: to the first waiter, to the idle
        heap, or (broken or past its age) to a worker that replaces it."""
        jobs = self._ledger.checkin(self.conn_key(conn), reusable,
                                    time.monotonic())
        if jobs:
            self._submit(jobs)

    def _discard_checked_out(self, conn: Any) -> None:
        self._release(conn, False)

    # -- Pool-wide operations -----------------------------------------------

    def close_idle(self) -> int:
        """Close every idle connection; returns how many."""
        idle = self._ledger.take_idle_all()
        return self._close_taken(idle)

    def close_stale(self, age: float = 600) -> int:
        """Close connections checked out more than ``age`` seconds ago (their
        holders' later ``close()`` is a no-op); returns how many."""
        cutoff = time.monotonic() - (seconds('age', age) or 0.0)
        stale = self._ledger.take_back_older(cutoff)
        return self._close_taken(stale)

    def _close_taken(self, records: List[PoolConnection]) -> int:
        for record in records:
            self._close_raw(record.conn)
        self._submit(self._ledger.closed_by_caller(len(records)))
        return len(records)

    def recycle(self) -> int:
        """Replace every connection: idle ones now, checked-out ones when
        they are checked in, connects under way when they land; checkouts
        go on being served meanwhile (rotated credentials, a failover, a
        changed server setting). Returns at once, with how many connections
        will be replaced."""
        jobs, count = self._ledger.recycle(time.monotonic())
        self._submit(jobs)
        logger.info('Recycling %d connection(s).', count)
        return count

    def warm_up(self, timeout: Optional[float] = 30.0) -> None:
        """Open ``min_connections`` now and wait until they are open (at
        application start-up, say). Raises ``OperationalError`` if they are
        not open within ``timeout`` seconds (None: wait as long as it
        takes), chaining the last connect error if connects failed."""
        wait = seconds('timeout', timeout)
        self._start()
        opened = self._ledger.wait_for_minimum(
            math.inf if wait is None else wait)
        if opened is None:
            return
        failing = self._ledger.failing
        error = OperationalError(
            'playhouse_pool opened %d of min_connections=%d to %s within '
            '%ss%s' % (opened, self._pool_options.min_connections,
                       self._safe_name(), timeout,
                       ': ' + self._safe_error(failing) if failing else ''))
        raise error from failing

    def close_all(self, timeout: Optional[float] = None) -> int:
        """Close every connection, idle and checked out, and stop the pool's
        workers. Threads waiting for a connection stay in line and are
        served by new connections once the old ones are closed, as in
        peewee. With ``timeout`` (seconds), a graceful shutdown instead:
        waiting threads get ``PoolClosedError``, new checkouts are refused,
        and checked-out connections get up to that long to come back. The
        calling thread's own connections are not waited for: they are
        closed now, or, when close_all() runs in a signal handler that
        interrupted this thread inside a database call, as each comes back
        (a statement under way finishes first). A handler that interrupted
        the pool's own bookkeeping gets 0 at once, and a thread closes the
        pool as soon as the interrupted operation ends. The pool stays
        usable: the next checkout opens a new connection (and starts the
        workers). Returns how many connections were closed."""
        wait = seconds('timeout', timeout) or 0.0
        caller = threading.current_thread() if self.thread_safe else None
        state = self._state
        own_key = None if state.closed else self.conn_key(state.conn)
        if self._ledger.lock._is_owned():
            self._close_all_after(own_key, caller, wait)
            return 0
        deferred = self._inside_a_database_call()
        if not deferred:
            # Only the connection goes: peewee's context and transaction
            # stacks stay, so a connection_context() or atomic() that this
            # call interrupts unwinds normally afterwards; an open
            # transaction is marked lost (see connect()).
            if own_key is not None and state.transactions:
                state.transactions = guards.LostTransactions(
                    state.transactions)
            state.closed, state.conn = True, None
        return self._shut_down(own_key, caller, deferred, wait)

    def _shut_down(self, own_key: Optional[int], caller: Any,
                   deferred: bool, wait: float) -> int:
        records: List[PoolConnection] = []
        self._stop_workers()
        try:
            self._ledger.shut_down(own_key, caller, deferred, wait, records)
        finally:                # even if the drain is interrupted
            for record in records:
                self._close_raw(record.conn)
            self._submit(self._ledger.closed_by_caller(len(records)))
        return len(records)

    def _close_all_after(self, own_key: Optional[int], caller: Any,
                         wait: float) -> None:
        """close_all() from a signal handler that interrupted this thread
        inside the ledger: its bookkeeping is mid-update and must not be
        touched until that operation ends. A thread of its own closes the
        pool as soon as it does (taking the lock then); the interrupted
        thread's connections are closed as they come back."""
        # Not a daemon: a handler that then exits still closes the pool.
        threading.Thread(target=self._shut_down,
                         args=(own_key, caller, True, wait),
                         name='playhouse_pool-close_all').start()

    def _forget_connections(self) -> None:
        """In a forked child: drop all bookkeeping without closing anything
        (the parent's connections stay referenced, never closed or used),
        with a new ledger (another thread of the parent may have held its
        lock) and no workers (the parent's threads are not here)."""
        guards.inherited.extend(
            r.conn for r in self._ledger.every_connection())
        self._ledger = Ledger(self._pool_options, self._events)
        self._workers = None
        self._housekeeper = None
        self._watchdog = Watchdog()
        self._start_lock = threading.RLock()
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
        ``timeouts``, ``reclaimed``, ``recycled``, ``recovered`` (statements
        run again on another connection, recovery.py), ``wait_seconds``
        (total seconds threads spent waiting), ``use_seconds`` (total
        seconds connections were held, counted at check-in),
        ``connect_seconds`` (total seconds the connects that succeeded
        took), ``connect_errors`` (failed connect attempts, retries
        included) and ``io_timeouts`` (the pool's own connects, pings,
        resets and closes that did not end within their deadline: cut
        short, or no longer counted on) only grow.
        """
        return self._ledger.stats()

    def _count_recovered(self) -> None:
        # recovery.py ran a checkout's first statement again.
        with self._ledger.lock:
            self._ledger.n_recovered += 1

    def __repr__(self) -> str:
        stats = self.pool_stats()
        return '<%s %r open=%d in_use=%d idle=%d max_connections=%s>' % (
            type(self).__name__, redact(str(self.database)), stats['open'],
            stats['in_use'], stats['idle'], stats['max_connections'] or None)


def _family_hooks(cls: type) -> Optional[type]:
    """The hooks registered for the most derived peewee database class
    ``cls`` is made of, or None."""
    for klass in cls.__mro__:
        hooks = PooledDatabase._families.get(
            '%s.%s' % (klass.__module__, klass.__qualname__))
        if hooks is not None:
            return hooks
    return None


# Frames that are not the application's: this package's, peewee's and the
# playhouse extensions' (connection_context(), the decorators' wrappers).
_NOT_THE_APPLICATIONS = tuple(
    os.path.dirname(os.path.abspath(path)) + os.sep
    for path in (__file__, playhouse.__file__))
_PEEWEE_MODULE = os.path.abspath(peewee.__file__)


def _caller_stack() -> List[traceback.FrameSummary]:
    """Where the application checked the connection out: its own frames,
    innermost last (this package's, peewee's and playhouse's left out)."""
    frames = [f for f in traceback.extract_stack(limit=32)
              if not f.filename.startswith(_NOT_THE_APPLICATIONS)
              and f.filename != _PEEWEE_MODULE]
    return frames[-12:]
