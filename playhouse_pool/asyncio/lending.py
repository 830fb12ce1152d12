"""The asyncio face's lending: how a task borrows a connection and gives
it back, on one event loop (docs/design.rst, "The asyncio face"), as
lending.py of the core does it for threads.

A checkout takes the oldest idle connection from the ledger and checks it
with no I/O: the wrapper's ``stale()`` (the driver's flags and transport:
the loop has read whatever the server said, rule 3) and its age. With none
idle, or one that fails, the task queues a
:class:`~playhouse_pool.asyncio.waiting.FutureWaiter` and awaits it until
the ledger hands it a connection, checked in by another task or new from a
job, whichever comes first (rule 2). Its deadline is a timer on the loop,
never ``asyncio.wait_for`` (which, before Python 3.12, may swallow a cancel
that races the result).

A check-in does the ledger's part at once, with no await: a clean
connection (the driver's flags say so) goes to the first waiter or the
idle heap; one left in a transaction or mid-statement goes out for a reset
job; a broken one for a replacement. A cancel can land at no point where
a connection is half given back.

The jobs and the housekeeper run as tasks on the loop (runner.py), from
the first checkout on.
"""
import asyncio
import logging
import math
import time
from typing import Any, Callable, List, Optional


from ..errors import MaxConnectionsExceeded, warm_up_failed
from ..events import PoolEvents
from ..housekeeping import Housekeeping
from ..jobs import Jobs
from ..ledger import Ledger
from ..lending import SHORTEST_PING, _caller_stack
from ..records import PoolConnection
from ..stats import Counters
from ..waiting import WAITING
from ..sweeps import Sweeps
from .._options import PoolOptions
from .opening import CLEAN, DIRTY, AsyncOpener
from .runner import HousekeeperTask, JobRunner
from .tasks import TaskOwner, current_task
from .waiting import FutureWaiter, PoolTimeout

logger = logging.getLogger('playhouse_pool')

_monotonic = time.monotonic

# A waiter whose deadline passed while the ledger lets it wait on for a
# connect under way for it looks again this much later.
RECHECK = 0.01


class AsyncLender:
    """Lends one pool's connections to the tasks of one event loop, and
    runs its jobs and housekeeper there. Bound to a loop once (``bind``);
    another loop gets another lender (pool.py)."""

    def __init__(self, checkin_state: Callable[[Any], str],
                 options: PoolOptions, events: PoolEvents,
                 opener: AsyncOpener,
                 counters: Optional[Counters] = None) -> None:
        self._checkin_state = checkin_state    # the backend's verdict
        self.events = events
        self.opener = opener
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.ledger = Ledger(options, events, dispatch=self._dispatch)
        if counters is not None:           # counters only grow
            self.ledger.counters = counters
        self.sweeps = Sweeps(self.ledger)
        self.housekeeping = Housekeeping(self.ledger, self.sweeps)
        self.runner: Optional[JobRunner] = None
        self.housekeeper: Optional[HousekeeperTask] = None
        self._pending: Jobs = []          # dispatched before bind()
        # From the options, for the checkout (reconfigure() updates them).
        self._wait_seconds = options.wait_seconds
        self._ping_every_time = options.ping_after == 0
        self._leak_timeout = options.leak_timeout is not None
        # The timer of the waiters' nearest deadline (_deadlines).
        self._timer: Optional[asyncio.TimerHandle] = None
        self._timer_at = math.inf

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve the tasks of ``loop`` (running, on this thread)."""
        self.loop = loop
        self.runner = JobRunner(loop, self.opener)
        pending, self._pending = self._pending, []
        self.runner.submit(pending)

    def _dispatch(self, jobs: Jobs) -> None:
        """The ledger's dispatch: jobs to tasks on the loop."""
        if jobs:
            if self.runner is None:
                self._pending.extend(jobs)
            else:
                self.runner.submit(jobs)

    def start(self) -> None:
        """From the first checkout on (and again after close_all): the
        housekeeper, and the minimum opened."""
        if self.housekeeper is None:
            assert self.loop is not None
            self.housekeeper = HousekeeperTask(self.loop, self.housekeeping)
            self.housekeeper.start()
        if not self.ledger.started:
            self.sweeps.start()

    def stop(self) -> None:
        """close_all(): the housekeeper stops, retries end their wait."""
        housekeeper, self.housekeeper = self.housekeeper, None
        if housekeeper is not None:
            housekeeper.stop()
        if self.runner is not None:
            self.runner.stop()

    def reconfigure(self, options: PoolOptions, discard_idle: bool) -> None:
        """init() changed the options (Sweeps.reconfigure)."""
        self._wait_seconds = options.wait_seconds
        self._ping_every_time = options.ping_after == 0
        self._leak_timeout = options.leak_timeout is not None
        self.sweeps.reconfigure(options, discard_idle)
        self.wake_housekeeper()

    def wake_housekeeper(self) -> None:
        if self.housekeeper is not None:
            self.housekeeper.wake()

    # -- Checkout -------------------------------------------------------------

    async def checkout(self, owner: TaskOwner) -> PoolConnection:
        """A checked connection for ``owner``. Raises PoolTimeout if none
        is free in time, the connect error if none could be opened.

        The oldest idle one if it passes its checks; else the task waits in
        line, checking each connection handed over as it comes. A checkout
        counts once, however many connections it goes through. (One
        coroutine with the wait inline: each level of awaiting would be
        paid again at every wake-up.)"""
        start = now = _monotonic()
        ledger = self.ledger
        record = ledger.take_idle(owner, now) if ledger.idle.entries \
            else None
        counted = record is not None
        deadline = None
        while True:
            if record is not None:
                # The checks (_check), inline while the answer is yes.
                if (record.conn.stale()
                        or now >= record.expires
                        or self._ping_every_time):
                    usable = self._check(record, now)
                else:
                    usable = True
                if usable is None:
                    usable = await self._ping(record, now, deadline)
                if usable:
                    if self._leak_timeout:
                        record.stack = _caller_stack()
                    if self.events.listeners:
                        self.events.checkout(_monotonic() - start)
                    return record
            # Wait in line.
            if not (self.housekeeper and ledger.started):
                self.start()
            wait = self._wait_seconds
            deadline = None if wait is None else start + wait
            waiter = FutureWaiter(owner, start, deadline, counted,
                                  self.loop)  # type: ignore[arg-type]
            try:
                ledger.queue(waiter, now)
            except MaxConnectionsExceeded as exc:
                if type(exc) is MaxConnectionsExceeded:    # not closing
                    raise PoolTimeout(*exc.args) from None
                raise
            if waiter.state is WAITING:
                if deadline is not None and deadline < self._timer_at:
                    self._arm(deadline)
                try:
                    await waiter.future
                except BaseException:      # cancelled (or anything else)
                    self._abandon(waiter)
                    raise
            if waiter.error is not None:
                self._raise(waiter)
            record = waiter.record
            counted = True
            now = _monotonic()

    @staticmethod
    def _raise(waiter: FutureWaiter) -> None:
        """Raise what the wait failed with."""
        error = waiter.error
        # No cycle (error -> traceback -> this frame -> waiter -> error):
        # the frames it holds would outlive its handling.
        waiter.error = None
        try:
            raise error  # type: ignore[misc]
        finally:
            del error

    # The waiters' deadlines: one timer on the loop, for the nearest. (A
    # timer per waiter would be made and cancelled on every wait, and
    # most waits end long before their deadline.)

    def _arm(self, deadline: float) -> None:
        assert self.loop is not None
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self.loop.call_later(deadline - time.monotonic(),
                                           self._deadlines)

    def _deadlines(self) -> None:
        """The nearest deadline came: each waiter past its own gives up
        (``_deadline``); the timer is set for the next one."""
        self._timer, self._timer_at = None, math.inf
        now = time.monotonic()
        ledger = self.ledger
        with ledger.lock:
            due = [w for w in ledger.waiters
                   if w.deadline is not None and w.deadline <= now]
        for waiter in due:
            assert isinstance(waiter, FutureWaiter)
            self._deadline(waiter, now)
        with ledger.lock:
            # (One past its deadline and not yet given up, settling meanwhile,
            # is looked at again shortly.)
            later = [w.deadline if w.deadline > now else now + RECHECK
                     for w in ledger.waiters
                     if w.deadline is not None and w.deadline < math.inf]
        if later:
            self._arm(min(later))

    def _deadline(self, waiter: FutureWaiter, now: float) -> None:
        """A waiter's deadline passed: the ledger abandons it unless it was
        served meanwhile, and it wakes with the reason."""
        abandoned, error = self.ledger.give_up(waiter, now,
                                               self.opener.could_not_connect)
        if not abandoned:
            return
        assert error is not None
        if isinstance(error, MaxConnectionsExceeded):
            # Both ours and pwasyncio's OperationalError.
            error = PoolTimeout(*error.args)
        waiter.timed_out(error)

    def _abandon(self, waiter: FutureWaiter) -> None:
        """Its task was cancelled while it waited: out of the line; or, if
        it was handed a connection in the same loop iteration, that
        connection goes on, unused, to the next waiter."""
        now = time.monotonic()
        abandoned, _ = self.ledger.give_up(waiter, now, None)
        if not abandoned and waiter.record is not None:
            self.ledger.checkin(waiter.record.key, True, now)

    def _check(self, record: PoolConnection, now: float) -> Optional[bool]:
        """May this connection, just checked out, be handed to the task?
        Its driver's flags and transport, and its age: no round trip. One
        that fails goes to a job to be replaced (False). None: only a
        round trip can say (``ping_after=0``)."""
        ledger = self.ledger
        if record.conn.stale():
            logger.debug('Connection %s was closed, replacing it.',
                         record.key)
        elif now >= record.expires and not ledger.keep_expired(record, now):
            logger.debug('Connection %s is past its age, replacing it.',
                         record.key)
        elif ledger.options.ping_after == 0:
            return None
        else:
            return True
        ledger.retire(record)
        return False

    async def _ping(self, record: PoolConnection, now: float,
                    deadline: Optional[float]) -> bool:
        """``ping_after=0``: a round trip, within the checkout's deadline
        too; a connection that fails it, or whose task is cancelled during
        it, is replaced."""
        seconds = self.opener.seconds()
        if deadline is not None:      # at its deadline, still a moment
            seconds = min(seconds, max(deadline - now, SHORTEST_PING))
        try:
            alive = await self.opener.ping(record, seconds)
        except BaseException:
            self.ledger.checkin(record.key, False, time.monotonic())
            raise
        if not alive:
            logger.info('Connection %s failed its ping, replacing it.',
                        record.key)
            self.ledger.retire(record)
        return alive

    # -- Check-in -------------------------------------------------------------

    def checkin(self, conn: Any) -> None:
        """Give back a connection checked out by the current task (a
        connection of a task that has ended is reclaimed; one that a live
        task other than the current one holds is left alone: a second
        release). No I/O, no await."""
        ledger = self.ledger
        key = id(conn)
        record = ledger.in_use.get(key)
        if record is not None:
            owner = record.owner
            if (isinstance(owner, TaskOwner)
                    and owner.task is not current_task()):
                if owner.task.done():
                    self.sweeps.reclaim_one(key)
                else:
                    logger.debug('Ignored a release of connection %s, held '
                                 'by task %r.', key, owner.name)
                return
        state = self._checkin_state(conn)
        now = _monotonic()
        if state is CLEAN:
            ledger.checkin(key, True, now)
        elif state is DIRTY:
            ledger.checkin_to_reset(key, now)
        else:
            ledger.checkin(key, False, now)

    def reclaim(self, conn: Any) -> None:
        """pwasyncio's release of the connection of a task that ended
        without aclose(): reclaimed (counted, logged, reset by a job)."""
        self.sweeps.reclaim_one(id(conn))

    # -- Waiting for the books ------------------------------------------------

    async def wait_until(self, ready: Callable[[], bool],
                         seconds: float) -> bool:
        """Until ``ready()`` (evaluated under the ledger's lock) or
        ``seconds`` pass; True if it became ready. (close_all's drain,
        warm_up.)"""
        ledger = self.ledger
        loop = asyncio.get_running_loop()
        changed: List['asyncio.Future[None]'] = [loop.create_future()]

        def watcher() -> None:
            # Under the ledger's lock, maybe on another thread.
            future = changed[0]
            if asyncio._get_running_loop() is loop:
                _resolve(future)
            else:
                loop.call_soon_threadsafe(_resolve, future)

        end = time.monotonic() + seconds
        with ledger.lock:
            ledger.watchers.append(watcher)
        try:
            while True:
                with ledger.lock:
                    if ready():
                        return True
                    changed[0] = loop.create_future()
                left = end - time.monotonic()
                if left <= 0:
                    return False
                await asyncio.wait(changed, timeout=min(left, 3600.0))
        finally:
            with ledger.lock:
                ledger.watchers.remove(watcher)

    async def warm_up(self, timeout: Optional[float]) -> None:
        """See AsyncPooledDatabase.warm_up."""
        self.start()
        if await self.wait_until(self.sweeps.has_minimum,
                                 math.inf if timeout is None else timeout):
            return
        raise warm_up_failed(self.sweeps.opened_count(),
                             self.ledger.options.min_connections,
                             self.opener.name(), timeout, self.ledger.failing)

    # -- The end --------------------------------------------------------------

    async def close_all(self, own_key: Any, wait: float) -> int:
        """See AsyncPooledDatabase.close_all; ``own_key``: the calling
        task's own connection, never waited for."""
        sweeps = self.sweeps
        self.stop()
        records, own = sweeps.shut_down(own_key, None, False, bool(wait))
        records = list(records)
        ledger = self.ledger
        try:
            if wait:
                await self.wait_until(lambda: ledger.in_use.keys() <= own,
                                      wait)
        finally:                # even if the drain is cancelled
            records += sweeps.finish(own, bool(wait))
            # A task of its own frees the slots once every close has ended
            # (each bounded, rule 9), even if this call is cancelled.
            await asyncio.shield(asyncio.ensure_future(
                self._close_each(records)))
        return len(records)

    async def _close_each(self, records: List[PoolConnection]) -> None:
        try:
            await asyncio.gather(*(self.opener.close(r) for r in records))
        finally:
            self.sweeps.closed_by_caller(len(records))

    def forget(self) -> List[PoolConnection]:
        """Its loop is gone: every connection it knows of, for the caller
        to drop without touching (their transports belong to that loop)."""
        return self.sweeps.every_connection()


def _resolve(future: 'asyncio.Future[None]') -> None:
    if not future.done():
        future.set_result(None)
