"""Thread guards: a connection held by a thread (or greenlet) that ended
without ``close()`` is reclaimed at once, logged and counted
(docs/design.rst, rule 5). The housekeeper's scan for dead owners is the
fallback (housekeeping.py).
"""
import os
import threading
import weakref

from .sweeps import Sweeps


class ThreadGuard:
    """Lives in a thread-local of the pool for each thread that checked a
    connection out. When the thread (or greenlet) ends, its locals are freed
    and this reclaims whatever the thread still held, at once: threads
    already waiting for a connection are not left waiting for nothing."""
    __slots__ = ('sweeps', 'thread', 'pid')

    def __init__(self, sweeps: Sweeps) -> None:
        self.sweeps = weakref.ref(sweeps)
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
        sweeps = self.sweeps()
        if sweeps is None:
            return
        if sweeps.ledger.lock._is_owned():    # type: ignore[attr-defined]
            # The garbage collector freed this guard (it was in a reference
            # cycle) inside one of this thread's own pool operations: the
            # bookkeeping is mid-update. Its thread is gone, so the scan for
            # dead owners takes its connections back instead.
            return
        try:
            sweeps.reclaim(self.thread)
        except Exception:       # interpreter shutdown: nothing to save
            pass


class ThreadGuards:
    """One pool's guards, a thread-local of them."""

    def __init__(self, sweeps: Sweeps) -> None:
        self._sweeps = sweeps
        self._local = threading.local()

    def owner(self) -> threading.Thread:
        """This thread, its guard in place. The guard is a local of this
        frame only: one that a traceback kept alive (an exception stored in
        a cycle) would keep the guard from reclaiming at thread exit."""
        guard = getattr(self._local, 'guard', None)
        if guard is None:
            guard = self._local.guard = ThreadGuard(self._sweeps)
        return guard.thread
