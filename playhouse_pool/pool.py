"""PooledDatabase: peewee's face of the pool.

It turns peewee's calls (connect, close, init, close_all, ...) into the
pool's: the ledger keeps the books (ledger.py, sweeps.py), the lender hands
connections to threads and runs the workers (lending.py, workers.py), the
opener does the I/O on one connection (opening.py). The first statement of
a checkout is watched here (its rules in recovery.py), and close_all(),
dispose() and forks are in shutdown.py. docs/design.rst has the map.
"""
import logging
import time
from typing import (TYPE_CHECKING, Any, ClassVar, Dict, List, Optional,
                    Tuple)

import peewee
from peewee import InterfaceError, OperationalError

from . import recovery, shutdown
from ._options import PoolOptions, pop_options, seconds
from ._redact import redact
from .context import ExecutionContext
from .events import PoolEvents
from .guards import ThreadGuards
from .ledger import Ledger
from .lending import Lender
from .opening import Opener, driver_errors
from .records import PoolConnection, wall_clock
from .sweeps import Sweeps
from .watchdog import Watch, Watchdog

logger = logging.getLogger('playhouse_pool')

# peewee's base hook for each connect: it has no body, so the checkout path
# skips it unless a subclass (or the instance) gives it one.
_NO_INITIALIZE = getattr(peewee.Database, '_initialize_connection', None)

class PooledDatabase(recovery.StatementWatch):
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
    readability probe) and ``_ping(conn)`` (a round trip that never
    reconnects); see backends.py. Combined by hand with a peewee database
    of a family this package knows (``class P(PooledDatabase,
    PostgresqlDatabase)``, MySQL, SQLite, APSW, ...), the class is given
    that family's hooks, as if it had been declared with this package's
    class for it: its own overrides still come first.
    """

    if TYPE_CHECKING:
        # peewee's private side of Database, which the pool builds on.
        _state: Any

        def _connect(self) -> Any: ...
        def _close(self, conn: Any) -> None: ...
        def _set_server_version(self, conn: Any) -> None: ...
        def _initialize_connection(self, conn: Any) -> None: ...

    # 'module.QualName' of a peewee database class -> the hooks of its
    # family (backends.py registers them; see __init_subclass__).
    _families: ClassVar[Dict[str, type]] = {}
    def __init__(self, database: Any, **kwargs: Any) -> None:
        self._pool_options = PoolOptions().updated(pop_options(kwargs))
        self._events = PoolEvents()       # listeners: the metrics collectors
        self._new_core()
        shutdown.track(self)
        super().__init__(database, **kwargs)

    def _new_core(self) -> None:
        """The books and the thread face, new: at construction, and in a
        forked child (where the parent's threads, and maybe the holder of
        its lock, are gone)."""
        watchdog = Watchdog()
        self._opener = Opener(self, watchdog)
        self._ledger = Ledger(self._pool_options, self._events,
                              dispatch=lambda jobs: None)
        self._sweeps = Sweeps(self._ledger)
        self._lender = Lender(self, self._ledger, self._sweeps, self._opener,
                              self._events, watchdog)
        self._ledger.dispatch = self._lender.submit
        self._guards = ThreadGuards(self._sweeps)

    def init(self, database: Any, **kwargs: Any) -> None:
        """peewee's deferred initialisation; accepts the pool's keywords too.
        A bad keyword raises before anything changes."""
        previous = self._pool_options
        options = previous.updated(pop_options(kwargs))
        self._check_database(database)
        super().init(database, **kwargs)
        self._pool_options = options
        self._sweeps.reconfigure(options, discard_idle=options.reset_session
                                 and not previous.reset_session)
        self._lender.wake_housekeeper()

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

    def _check_database(self, database: Any) -> None:
        """Backends refuse a database the pool cannot share (SQLite memory)."""

    @property
    def connect_params(self) -> Dict[str, Any]:
        """peewee's connect keywords; while a worker opens a connection on
        its thread, with every zero-argument callable called."""
        return self._opener.connect_params()

    @connect_params.setter
    def connect_params(self, params: Dict[str, Any]) -> None:
        self._connect_params = params

    # -- What people introspect (as with peewee's pool) ----------------------

    @property
    def _connections(self) -> List[Tuple[float, int, Any]]:
        """The idle connections, as peewee shows them: (when opened, as
        ``time.time()``, a tie-breaker, the connection), in heap order. A
        snapshot: the pool's own heap holds its records."""
        return [(wall_clock(opened), seq, record.conn)
                for opened, seq, record in self._ledger.idle.entries]

    @property
    def _in_use(self) -> Dict[Any, PoolConnection]:
        return self._ledger.in_use

    @property
    def _pool_lock(self) -> Any:
        return self._ledger.lock

    @property
    def _reserved(self) -> int:
        """Slots held by a connect, close, ping or reset under way."""
        return self._ledger.slots.reserved

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

    # -- Backend hooks (backends.py overrides them) ---------------------------

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
        ``reset_session`` a new connection is the reset."""
        if self._pool_options.reset_session:
            return False
        flag = getattr(conn, 'in_transaction', None)
        rollback = getattr(conn, 'rollback', None)
        if isinstance(flag, bool):
            if flag:
                with self._bounded(conn) as watch:
                    if callable(rollback):
                        rollback()
                    else:
                        conn.cursor().execute('ROLLBACK')
                return not watch.cut and not conn.in_transaction
            return True
        if callable(rollback):
            with self._bounded(conn) as watch:
                rollback()
            return not watch.cut
        return True

    def conn_key(self, conn: Any) -> Any:
        """peewee's hook: the key a connection is known by (in ``_in_use``)."""
        return id(conn)

    def _connect_timeouts(self, params: Dict[str, Any],
                          seconds: float) -> Dict[str, Any]:
        """The driver's connect keywords that end a connect (handshake
        included) within about ``seconds``, for those ``params`` (the
        user's) does not set: the pool adds them to its own connects (rule
        9). None by default."""
        return {}

    def _restore_timeouts(self, conn: Any, added: Dict[str, Any]) -> None:
        """Undo on the new connection what of ``added`` would outlive the
        connect (a read timeout): the user's statements keep their own."""

    def _close_raw(self, conn: Any) -> None:
        """peewee's name: close a driver connection with ``_close``, never
        raising (errors are logged)."""
        self._opener.close_conn(conn)

    def _bounded(self, conn: Any) -> Watch:
        """A watch over the pool's own I/O on ``conn`` (rule 9), for the
        backends' check-in round trips: ``with self._bounded(conn) as
        watch: ...``, then ``watch.cut``."""
        return self._opener.bounded(conn)

    # -- peewee's connection API ----------------------------------------------

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
        if transactions and type(transactions) is shutdown.LostTransactions:
            # Going on in autocommit on a new connection would hide that
            # the transaction is gone.
            raise InterfaceError(
                "This thread's transaction lost its connection (close_all() "
                "closed it): leave the atomic() block first.")
        record = self._lender.checkout(
            self._guards.owner() if self.thread_safe else None)
        conn = record.conn
        # A connection that sat idle may have died unseen: its first
        # statement is watched (recovery.py); a new one has just proven
        # itself.
        state.pool_proven = conn if record.fresh else recovery.UNPROVEN
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
                with driver_errors:
                    initialize(conn)
        except BaseException:
            state.reset()
            self._checkin(conn, False)
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
            self._checkin(conn, self._opener.reset_conn(conn))
        except BaseException:          # interrupted mid-reset: don't keep it
            self._checkin(conn, False)
            raise
        return True

    def _checkin(self, conn: Any, reusable: bool) -> None:
        """Return a checked-out connection: to the first waiter, to the idle
        heap, or (broken or past its age) to a worker that replaces it."""
        self._ledger.checkin(self.conn_key(conn), reusable, time.monotonic())

    def manual_close(self) -> bool:
        """Really close this thread's connection and free its slot."""
        if self.is_closed():
            return False
        if self.in_transaction():
            raise OperationalError('Attempting to close database while '
                                   'transaction is open.')
        conn = self._state.conn
        self._state.reset()
        if self._sweeps.detach(self.conn_key(conn)) is not None:
            self._opener.close_conn(conn)
            self._sweeps.closed_by_caller(1)
        return True

    def execution_context(self, with_transaction: bool = True
                          ) -> ExecutionContext:
        """A block (``with``) or function (decorator) that runs on a pooled
        connection of its own, in a transaction unless ``with_transaction``
        is False; the thread's own connection state is left as it was."""
        return ExecutionContext(self, with_transaction)

    # recovery.py: a checkout's first statement proved its connection dead.
    def _retire_dead(self, conn: Any) -> None:
        self._checkin(conn, False)

    def _count_recovered(self) -> None:
        with self._ledger.lock:
            self._ledger.counters.recovered += 1

    # -- Pool-wide operations -------------------------------------------------

    def close_idle(self) -> int:
        """Close every idle connection; returns how many."""
        return self._close_taken(self._sweeps.take_idle_all())

    def close_stale(self, age: float = 600) -> int:
        """Close connections checked out more than ``age`` seconds ago (their
        holders' later ``close()`` is a no-op); returns how many."""
        cutoff = time.monotonic() - (seconds('age', age) or 0.0)
        return self._close_taken(self._sweeps.take_back_older(cutoff))

    def _close_taken(self, records: List[PoolConnection]) -> int:
        try:
            for record in records:
                self._opener.close(record)
        finally:                # their slots, even if interrupted
            self._sweeps.closed_by_caller(len(records))
        return len(records)

    def recycle(self) -> int:
        """Replace every connection: idle ones now, checked-out ones when
        they are checked in, connects under way when they land; checkouts
        go on being served meanwhile (rotated credentials, a failover, a
        changed server setting). Returns at once, with how many connections
        will be replaced."""
        count = self._sweeps.recycle(time.monotonic())
        logger.info('Recycling %d connection(s).', count)
        return count

    def warm_up(self, timeout: Optional[float] = 30.0) -> None:
        """Open ``min_connections`` now and wait until they are open (at
        application start-up, say). Raises ``OperationalError`` if they are
        not open within ``timeout`` seconds (None: wait as long as it
        takes), chaining the last connect error if connects failed."""
        self._lender.warm_up(seconds('timeout', timeout))

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
        return shutdown.close_all(self, seconds('timeout', timeout) or 0.0)

    def dispose(self) -> None:
        """Forget every connection without closing any (they may belong to
        another process): the pool starts empty. Waiting threads get
        ``PoolClosedError``; connects under way still land in the pool."""
        shutdown.dispose(self)

    def pool_stats(self) -> Dict[str, Any]:
        """A snapshot of the pool, cheap enough to call per request.

        ``open == in_use + idle``; ``created``, ``closed``, ``checkouts``,
        ``timeouts``, ``reclaimed``, ``recycled``, ``recovered`` (statements
        run again on another connection, recovery.py), ``wait_seconds``
        (total seconds threads spent waiting), ``use_seconds`` (total
        seconds connections were held, counted at check-in),
        ``connect_seconds`` (total seconds the connects that succeeded
        took) and ``connect_errors`` (failed connect attempts, retries
        included) only grow.
        """
        return self._ledger.stats()

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
