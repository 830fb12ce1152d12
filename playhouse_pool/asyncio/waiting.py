"""A checkout waiting on the event loop: the core's ``Waiter`` made of a
future (docs/design.rst, "The asyncio face"), and the error of a checkout
the pool could not serve.

The ledger hands, fails and abandons waiters under its lock (waiting.py
of the core says why each settles it once). What a future adds: its task
can be cancelled without the ledger's lock (``Task.cancel()`` cancels the
future at once), so ``_wake()`` refuses a future already done, and the
ledger offers the connection to the next waiter. The other race, handed
and then cancelled in the same loop iteration, is the waiting side's: its
``except`` finds the waiter settled and checks the connection back in
(lending.py).
"""
import asyncio
from typing import Any, Optional

from peewee import OperationalError

from ..errors import MaxConnectionsExceeded
from ..records import Owner, PoolConnection
from ..waiting import ABANDONED, HANDED, WAITING, Waiter


class PoolTimeout(MaxConnectionsExceeded, OperationalError):
    """No connection could be had in time (or at once, with
    ``timeout=None`` or ``max_waiting`` reached). Both this package's
    ``MaxConnectionsExceeded`` (a ``ValueError``, as the thread pool
    raises) and peewee's ``OperationalError`` (as pwasyncio raised on an
    acquire timeout), so code written for either keeps catching it. Its
    message says why the pool ran dry."""


class FutureWaiter(Waiter):
    """A task's waiter: settling resolves its future. (Its deadline is the
    lender's: lending.py.)"""
    __slots__ = ('future', 'loop')

    def __init__(self, owner: Optional[Owner], since: float,
                 deadline: Optional[float], counted: bool,
                 loop: asyncio.AbstractEventLoop) -> None:
        # Waiter.__init__, inline: one is made for every wait.
        self.owner = owner
        self.since = since
        self.deadline = deadline
        self.counted = counted
        self.state = WAITING
        self.record = None
        self.error = None
        self.loop = loop
        self.future: 'asyncio.Future[None]' = loop.create_future()

    def hand(self, record: PoolConnection) -> bool:
        # Waiter.hand with _wake() inline: this runs on every hand-off.
        if self.state is not WAITING:
            return False
        future = self.future
        if future.done():           # its task was cancelled: not this one
            self.state = ABANDONED
            return False
        self.record, self.state = record, HANDED
        if asyncio._get_running_loop() is self.loop:
            future.set_result(None)
        else:
            self.loop.call_soon_threadsafe(_resolve, future)
        return True

    def _wake(self) -> bool:
        future = self.future
        if future.done():           # its task was cancelled: not this one
            return False
        if asyncio._get_running_loop() is self.loop:
            future.set_result(None)
        else:
            # Settled from another thread (recycle(), init()): the loop
            # resolves it. If its task is cancelled meanwhile, the task
            # finds the waiter settled and passes the connection on.
            self.loop.call_soon_threadsafe(_resolve, future)
        return True

    def timed_out(self, error: BaseException) -> None:
        """Its deadline passed and the ledger abandoned it: wake it with
        ``error`` (if its task has not been cancelled meanwhile)."""
        self.error = error
        if not self.future.done():
            self.future.set_result(None)


def _resolve(future: 'asyncio.Future[Any]') -> None:
    if not future.done():
        future.set_result(None)
