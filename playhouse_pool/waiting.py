"""Checkouts that wait for a connection, and the queue they wait in.

A :class:`Waiter` is settled exactly once: handed a connection, failed
with an error, or abandoned by its own side (its deadline passed, its task
was cancelled, an exception interrupted its wait). The ledger hands and
fails waiters under its lock, and the waiting side abandons through the
ledger (``Ledger.give_up``), under the same lock; so the three never
interleave, and each says whether it was the one that settled the waiter.
A ``hand()`` that is refused (the waiter was abandoned, or its future was
cancelled on the event loop) leaves the connection with the ledger, which
offers it to the next waiter.

How a waiter sleeps is its face's business: :class:`ThreadWaiter` for
threads (a lock released to wake it); the asyncio face's waiter is a
future. The bookkeeping sees only this interface.
"""
import threading
from typing import Callable, Deque, List, Optional

from .records import Owner, PoolConnection
from .stats import Counters

WAITING, HANDED, FAILED, ABANDONED = 'waiting', 'handed', 'failed', \
    'abandoned'


class Waiter:
    """One checkout waiting for a connection (see the module docstring)."""
    __slots__ = ('owner', 'since', 'deadline', 'counted', 'state', 'record',
                 'error')

    def __init__(self, owner: Optional[Owner], since: float,
                 deadline: Optional[float], counted: bool = False) -> None:
        self.owner = owner        # who holds what it is handed (None: shared)
        self.since = since        # the checkout's start
        self.deadline = deadline  # None: until handed or failed
        self.counted = counted    # in pool_stats()['checkouts'] already
        self.state = WAITING
        self.record: Optional[PoolConnection] = None
        self.error: Optional[BaseException] = None

    def hand(self, record: PoolConnection) -> bool:
        """Give it ``record``; False if it was settled already (or can no
        longer be woken): the caller keeps the connection."""
        if self.state is not WAITING:
            return False
        self.record, self.state = record, HANDED
        if self._wake():
            return True
        self.record, self.state = None, ABANDONED
        return False

    def fail(self, error: BaseException) -> bool:
        """Settle it with ``error``; False if it was settled already."""
        if self.state is not WAITING:
            return False
        self.error, self.state = error, FAILED
        if self._wake():
            return True
        self.error, self.state = None, ABANDONED
        return False

    def abandon(self) -> bool:
        """Its own side gives up; False if it was handed or failed first
        (then ``record`` or ``error`` says with what)."""
        if self.state is not WAITING:
            return False
        self.state = ABANDONED
        return True

    def _wake(self) -> bool:
        """Wake the waiting side; False if it is gone (a cancelled
        future)."""
        raise NotImplementedError


class ThreadWaiter(Waiter):
    """A thread's waiter: it sleeps on a lock that settling releases."""
    __slots__ = ('_signal',)

    def __init__(self, owner: Optional[Owner], since: float,
                 deadline: Optional[float], counted: bool = False) -> None:
        # Waiter.__init__'s, inlined: one made for every checkout that waits.
        self.owner, self.since, self.deadline = owner, since, deadline
        self.counted, self.state = counted, WAITING
        self.record: Optional[PoolConnection] = None
        self.error: Optional[BaseException] = None
        self._signal = threading.Lock()
        self._signal.acquire()

    def hand(self, record: PoolConnection) -> bool:
        # Waiter.hand without the _wake() call: a thread can always be
        # woken, and this runs on every hand-off.
        if self.state is not WAITING:
            return False
        self.record, self.state = record, HANDED
        self._signal.release()
        return True

    def _wake(self) -> bool:
        self._signal.release()
        return True

    def sleep(self, timeout: float) -> bool:
        """Until settled or ``timeout`` seconds (inf: no limit); True if
        woken by settling."""
        if timeout >= threading.TIMEOUT_MAX:      # inf, or beyond the OS
            return self._signal.acquire()
        return self._signal.acquire(timeout=max(timeout, 0.0))

    def consume(self) -> None:
        """Settled while its sleep was interrupted: take the wake-up."""
        self._signal.acquire(False)


class WaitQueue(Deque[Waiter]):
    """The waiters, first come first served: a deque (its length, truth and
    popleft at C speed on the hot path) with the queue's few words."""

    def position(self, waiter: Waiter) -> int:
        return self.index(waiter)

    def leave(self, waiter: Waiter, now: float, counters: Counters) -> None:
        """Out of the line (a waiter in it), its wait counted."""
        self.remove(waiter)
        counters.wait_seconds += now - waiter.since

    def connect_failed(self, error: BaseException, retryable: bool,
                       now: float, margin: float, counters: Counters,
                       could_not_connect: Callable[[BaseException],
                                                   BaseException]) -> None:
        """A connect for the waiters failed: who hears of it. An error not
        worth a retry goes to the first waiter at once; a retryable one to
        the first that may not wait (timeout=None: the first error surfaces
        at once); and every waiter whose deadline comes within ``margin``
        hears that the pool could not connect (``could_not_connect``)."""
        for waiter in self:
            if not retryable or waiter.deadline is None:
                self.leave(waiter, now, counters)
                waiter.fail(error)
                break
        if not retryable:
            return
        for waiter in list(self):
            if (waiter.deadline is not None
                    and waiter.deadline <= now + margin):
                self.leave(waiter, now, counters)
                waiter.fail(could_not_connect(error))
                counters.timed_out()

    def take_all(self) -> List[Waiter]:
        waiters = list(self)
        self.clear()
        return waiters
