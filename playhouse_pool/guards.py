"""What keeps connections from leaking: thread guards that reclaim a dead
thread's connection, and the fork handler that gives a child process an
empty pool that never touches the parent's connections (DESIGN.md rule 5).
"""
import os
import threading
import weakref
from typing import TYPE_CHECKING, Any, List

from .workers import log_reclaimed

if TYPE_CHECKING:
    from .pool import PooledDatabase


class ThreadGuard:
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
        # lock, or when a fork replaces the pool's thread-local. No I/O: a
        # worker rolls the connections back.
        if getattr(self, 'pid', None) != os.getpid():
            # A forked child: CPython frees the parent's other threads' state
            # before the at-fork hooks run; their pool lock may be held
            # forever. (No pid: a signal handler interrupted __init__.)
            return
        pool = self.pool()
        if pool is None:
            return
        ledger = pool._ledger
        if ledger.lock._is_owned():
            # The garbage collector freed this guard (it was in a reference
            # cycle) inside one of this thread's own pool operations: the
            # bookkeeping is mid-update. Its thread is gone, so the scan for
            # dead owners takes its connections back instead.
            return
        try:
            reclaimed, jobs = ledger.reclaim(self.thread)
            log_reclaimed(reclaimed)
            pool._submit(jobs)
        except Exception:       # interpreter shutdown: nothing to save
            pass


def owner(pool: 'PooledDatabase') -> threading.Thread:
    """This thread, its guard in place. The guard is a local of this frame
    only: one that a traceback kept alive (an exception stored in a cycle)
    would keep the guard from reclaiming at thread exit."""
    guard = getattr(pool._guards, 'guard', None)
    if guard is None:
        guard = pool._guards.guard = ThreadGuard(pool)
    return guard.thread


class LostTransactions(list):
    """A thread's transaction stack after close_all() closed the connection
    under it: its blocks still pop it as they unwind, but connect() will not
    go on inside them on a new connection."""


# Connections of a parent process, kept referenced in a forked child so that
# no driver destructor ever closes (or says goodbye on) the parent's sockets.
inherited: List[Any] = []
_pools: 'weakref.WeakSet[PooledDatabase]' = weakref.WeakSet()


def track(pool: 'PooledDatabase') -> None:
    """Give ``pool`` an empty start in every child forked from now on."""
    _pools.add(pool)


def _after_fork_in_child() -> None:
    for pool in list(_pools):
        pool._forget_connections()


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_after_fork_in_child)
