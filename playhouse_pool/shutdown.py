"""How a pool ends: ``close_all()`` (from any thread, and from a signal
handler wherever it lands), ``dispose()``, and a fork, whose child starts
with an empty pool that never touches the parent's connections
(docs/design.rst, rule 5).

A signal handler runs on the main thread between any two bytecodes of what
that thread was doing. Three places need care:

* inside the ledger (its lock held by this thread, the bookkeeping half
  updated): the handler must not touch it; a thread of its own closes the
  pool once the interrupted step releases the lock;
* inside a database call (peewee's, the pool's, the driver's code, or a
  codec the driver calls mid-statement): closing that thread's connection
  under the driver can crash it (psycopg 3) or hang on the driver's own
  lock (psycopg2); that connection is doomed instead, and closed when it
  comes back;
* the caller's own connections cannot come back while it waits: they are
  never waited for.
"""
import os
import sys
import threading
import weakref
from typing import Any, List, Optional, Protocol

from .lending import Lender
from .ledger import Ledger
from .opening import Opener
from .records import PoolConnection
from .sweeps import Sweeps

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class Closable(Protocol):
    """The pooled database, as its shutdown sees it."""
    thread_safe: bool
    _state: Any
    _ledger: Ledger
    _sweeps: Sweeps
    _lender: Lender
    _opener: Opener

    def conn_key(self, conn: Any) -> Any: ...
    def _new_core(self) -> None: ...


class LostTransactions(List[Any]):
    """A thread's transaction stack after close_all() closed the connection
    under it: its blocks still pop it as they unwind, but connect() will not
    go on inside them on a new connection."""


def close_all(db: Closable, wait: float) -> int:
    """See PooledDatabase.close_all."""
    caller = threading.current_thread() if db.thread_safe else None
    state = db._state
    own_key = None if state.closed else db.conn_key(state.conn)
    if db._ledger.lock._is_owned():          # type: ignore[attr-defined]
        # A handler that interrupted the ledger: not a thing to touch until
        # that operation ends. Not a daemon: a handler that then exits
        # still closes the pool.
        threading.Thread(target=_shut_down,
                         args=(db, own_key, caller, True, wait),
                         name='playhouse_pool-close_all').start()
        return 0
    deferred = inside_a_database_call(db._opener.driver_package)
    if not deferred:
        # Only the connection goes: peewee's context and transaction stacks
        # stay, so a connection_context() or atomic() that this call
        # interrupts unwinds normally afterwards; an open transaction is
        # marked lost (see PooledDatabase.connect).
        if own_key is not None and state.transactions:
            state.transactions = LostTransactions(state.transactions)
        state.closed, state.conn = True, None
    return _shut_down(db, own_key, caller, deferred, wait)


def _shut_down(db: Closable, own_key: Any, caller: Optional[threading.Thread],
               deferred: bool, wait: float) -> int:
    sweeps, opener = db._sweeps, db._opener
    # The housekeeper stays, watching only: the drain's check-ins and the
    # closes below are bounded too (rule 9).
    watching = db._lender.stop(keep_watch=True)
    records: List[PoolConnection] = []
    try:
        taken, own = sweeps.shut_down(own_key, caller, deferred, bool(wait))
        records += taken
        try:
            if wait:
                ledger = db._ledger
                db._lender.wait_until(lambda: ledger.in_use.keys() <= own,
                                      wait)
        finally:                # even if the drain is interrupted
            records += sweeps.finish(own, bool(wait))
            try:
                for record in records:
                    opener.close(record)
            finally:
                sweeps.closed_by_caller(len(records))
    finally:
        if watching is not None:
            watching.stop()
    return len(records)


def inside_a_database_call(driver_package: Optional[str]) -> bool:
    """Is the caller of the calling function nested inside a database call
    of this thread: a signal handler (or a driver callback) that
    interrupted peewee's, the pool's or the driver's code? Then a
    connection of this thread may be mid-call. Frames of the wrappers that
    run the user's function (the decorators' ``inner``) do not count.
    Walks the stack: for close_all(), never a hot path."""
    # The codecs: psycopg2 calls one mid-statement, holding its lock.
    packages = ('peewee', 'playhouse', 'encodings', 'codecs',
                driver_package)
    frame: Any = sys._getframe(3)
    while frame is not None:
        if frame.f_code.co_name != 'inner' and (
                _in_this_package(frame)
                or (frame.f_globals.get('__name__') or ''
                    ).partition('.')[0] in packages):
            return True
        frame = frame.f_back
    return False


def _in_this_package(frame: Any) -> bool:
    # This package's own modules, not its subpackages (the benchmark runs
    # the pool; it is not inside it).
    folder: str = os.path.dirname(os.path.abspath(frame.f_code.co_filename))
    return folder == _PACKAGE_DIR


# -- Fork ---------------------------------------------------------------------

# Connections of a parent process, kept referenced in a forked child so that
# no driver destructor ever closes (or says goodbye on) the parent's sockets.
inherited: List[Any] = []
_pools: 'weakref.WeakSet[Any]' = weakref.WeakSet()


def track(db: Closable) -> None:
    """Give ``db`` an empty start in every child forked from now on."""
    _pools.add(db)


def forget_connections(db: Closable) -> None:
    """In a forked child: drop all bookkeeping without closing anything
    (the parent's connections stay referenced, never closed or used), with
    a new core (another thread of the parent may have held the ledger's
    lock) and no workers (the parent's threads are not here)."""
    inherited.extend(r.conn for r in db._sweeps.every_connection())
    db._new_core()
    # The forking thread's connection was the parent's: it goes, and so
    # do its transactions (the child, a multiprocessing worker say, runs
    # its own). peewee's context stack stays: a connection_context() the
    # fork happened in unwinds in the child.
    state = db._state
    state.closed, state.conn, state.transactions = True, None, []


def _after_fork_in_child() -> None:
    for db in list(_pools):
        forget_connections(db)


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def dispose(db: Closable) -> None:
    """See PooledDatabase.dispose."""
    db._sweeps.fail_waiters('The pool was disposed of while waiting.')
    inherited.extend(r.conn for r in db._sweeps.forget())
    db._state.reset()
