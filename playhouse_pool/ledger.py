"""The ledger: which connections are idle, which are checked out, which
slots work under way holds, and who waits. One lock, no I/O, no peewee, no
threads (docs/design.rst, rules 1, 2 and 7).

What needs I/O leaves as a job (jobs.py), its slot reserved until the job
publishes its result back here. Methods a face calls hand their jobs to
``dispatch`` once the lock is released; methods a job calls return the
follow-ups to the worker that runs it. ``_give_back`` is the one place a
connection that comes free is handed to a waiter, the first in line.
"""
import heapq
import math
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple, Type

from ._options import PoolOptions
from .errors import (DryPool, PoolClosedError, awaited_phrase, dry_pool,
                     pool_exhausted, timed_out_why)
from .events import PoolEvents
from .idle import IdleHeap
from .jobs import (CloseConnection, Job, Jobs, OpenConnection,
                   PingConnection, ReplaceConnection, ResetConnection)
from .records import Owner, PoolConnection, owner_kind
from .slots import Slots
from .stats import Counters
from .waiting import Waiter, WaitQueue

class Ledger:
    """The bookkeeping of one pool. Each method that changes the books
    takes ``lock``, except the primitives that sweeps.py and
    housekeeping.py call with it held (untake, retire_taken, close_taken,
    send_out, slot_freed, start_for_waiters, fill_up, last_usable,
    over_a_lowered_maximum, tell_watchers)."""

    def __init__(self, options: PoolOptions, events: PoolEvents,
                 dispatch: Callable[[Jobs], None]) -> None:
        self.options = options
        self.dispatch = dispatch     # jobs to the workers, lock released
        # Reentrant: close_all() may run in a signal handler that
        # interrupted this thread while it held the lock.
        self.lock = threading.RLock()
        self.idle = IdleHeap()
        self.in_use: Dict[Any, PoolConnection] = {}
        self.waiters = WaitQueue()
        self.slots = Slots(options.max_connections)
        self.counters = Counters(events)
        # Connections the pool closed while a thread held them (close_all,
        # close_stale): that thread's close() must not put the dead
        # connection back. key -> holder, so dead holders expire.
        self.closed_keys: Dict[Any, Optional[Owner]] = {}
        # close_all() and fork bump it: work started before belongs to a
        # pool that is gone, and its connection is closed when it lands.
        self.epoch = 0
        # The workers run (from the first checkout until close_all): the
        # minimum is kept open only then.
        self.started = False
        self.draining = 0     # close_all(timeout) calls under way
        # The last connect error of a run of failures (None once a connect
        # succeeds): a waiter that times out meanwhile says why.
        self.failing: Optional[BaseException] = None
        # recycle(): connections opened before this are replaced.
        self.recycled_at = -math.inf
        # Told whenever a connection turns idle or the checked-out ones
        # shrink (close_all's drain and warm_up watch for that).
        self.watchers: List[Callable[[], None]] = []

    # -- Counting ------------------------------------------------------------

    def open_count(self) -> int:
        """Connections that exist or are being opened (not being closed)."""
        return len(self.idle) + len(self.in_use) + self.slots.live

    def free_slots(self) -> float:
        return self.slots.free(len(self.idle) + len(self.in_use))

    # -- Checkout ------------------------------------------------------------

    def take_idle(self, owner: Optional[Owner], now: float
                  ) -> Optional[PoolConnection]:
        """The oldest idle connection, now checked out by ``owner``; None if
        there is none (then ``queue`` a waiter). The hot path: the heap's
        list itself, and _lend inlined."""
        with self.lock:
            entries = self.idle.entries
            if not entries or self.draining:
                return None
            record = heapq.heappop(entries)[2]
            record.checked_out = now
            record.owner = owner
            record.leak_reported = False
            self.in_use[record.key] = record
            self.counters.checkouts += 1
            return record

    def _lend(self, record: PoolConnection, owner: Optional[Owner],
              now: float, counted: bool) -> None:
        record.checked_out = now
        record.owner = owner
        record.leak_reported = False
        self.in_use[record.key] = record
        if not counted:
            self.counters.checked_out()

    def queue(self, waiter: Waiter, now: float) -> None:
        """A checkout found no usable idle connection: ``waiter`` is handed
        one at once if one is idle now, else queued, with a connect of its
        own if nothing on its way covers it. Raises MaxConnectionsExceeded
        if nothing can serve it in time, PoolClosedError while close_all()
        drains the pool."""
        with self.lock:
            if self.draining:
                raise PoolClosedError('The pool is shutting down '
                                      '(close_all is draining it).')
            if self.idle.entries:
                record = heapq.heappop(self.idle.entries)[2]
                self._lend(record, waiter.owner, now, waiter.counted)
                waiter.hand(record)
                return
            jobs = self._enqueue(waiter, now)
        if jobs:
            self.dispatch(jobs)

    def _enqueue(self, waiter: Waiter, now: float) -> Jobs:
        options = self.options
        jobs: Jobs = []
        slots = self.slots
        # What is already on its way covers the waiters in order; beyond
        # that, a connect of their own if a slot is free (none while every
        # slot is checked out: the busy pool's case, decided first); else
        # only a check-in can serve this one.
        if len(self.waiters) >= slots.coming:
            if (not (slots.limit is not None
                     and len(self.in_use) >= slots.limit)
                    and self.free_slots() > 0 and not slots.shrinking):
                jobs.append(self._open(waiter.deadline, now))
            elif waiter.deadline is None:
                self.counters.timed_out()
                raise pool_exhausted(
                    'all in use, and timeout=None does not wait for one',
                    now - waiter.since, self._dry(now))
            elif (options.max_waiting is not None
                  and len(self.waiters) >= options.max_waiting):
                self.counters.timed_out()
                raise pool_exhausted(
                    'max_waiting=%d %ss are already waiting'
                    % (options.max_waiting, owner_kind(waiter.owner)),
                    now - waiter.since, self._dry(now))
        self.waiters.append(waiter)
        return jobs

    def _open(self, deadline: Optional[float], now: float) -> Job:
        job = OpenConnection(self, deadline, now)
        self.slots.opening.append(job)
        return job

    def give_up(self, waiter: Waiter, now: float,
                timed_out: Optional[Callable[[BaseException], BaseException]]
                ) -> Tuple[bool, Optional[BaseException]]:
        """The waiter's side gives up: its deadline passed, whatever it
        waited for (rule 9), or (``timed_out`` None) an exception ended its
        wait. Returns (abandoned?, the error to raise at a deadline: what
        it waited for, or ``timed_out(connect error)`` while connects
        fail). Not abandoned: it was settled first (``record``/``error``)."""
        with self.lock:
            if waiter.state != 'waiting':
                return False, None
            awaited = awaited_phrase(
                self.waiters.position(waiter), self.slots.coming, now,
                [job.started for job in self.slots.opening
                 if not job.overdue])
            waiter.abandon()
            self.waiters.leave(waiter, now, self.counters)
            if timed_out is None:
                return True, None
            self.counters.timed_out()
            if self.failing is not None:
                return True, timed_out(self.failing)
            return True, pool_exhausted(
                timed_out_why(awaited, self.options), now - waiter.since,
                self._dry(now))

    def _dry(self, now: float) -> DryPool:
        return dry_pool(self.options.max_connections, len(self.idle),
                        self.in_use.values(), len(self.waiters),
                        self.options.leak_timeout is not None, now)

    def keep_expired(self, record: PoolConnection, now: float) -> bool:
        """At checkout: may this connection, past its own age limit, still
        be used (it is the last one open)?"""
        with self.lock:
            return self.last_usable(record, now, 1)

    def retire(self, record: PoolConnection, ping: bool = False) -> None:
        """A connection failed its checks at checkout: a worker replaces it
        (``ping``: its socket has something to say: pings it, then keeps or
        replaces it). Nothing if the pool took it back meanwhile."""
        with self.lock:
            if self.untake(record.key) is None:
                return
            job = (self.send_out(record, PingConnection) if ping
                   else self.retire_taken(record))
        self.dispatch([job])

    def untake(self, key: Any) -> Optional[PoolConnection]:
        record = self.in_use.pop(key, None)
        if record is None:
            self.closed_keys.pop(key, None)
        return record

    # -- Check-in -----------------------------------------------------------

    def checkin(self, key: Any, reusable: bool, now: float) -> None:
        """A checked-out connection comes back: to the first waiter or the
        idle heap; past its age, broken or over a lowered maximum, to a
        worker that closes it (and opens a replacement). The hot path:
        untake and the counting inlined."""
        with self.lock:
            record = self.in_use.pop(key, None)
            if record is None:       # closed by the pool while held
                self.closed_keys.pop(key, None)
                return
            counters = self.counters
            use = now - record.checked_out
            counters.use_seconds += use
            if counters.events.listeners:
                counters.events.checkin(use)
            if reusable and not (
                    self.slots.shrinking
                    and self.over_a_lowered_maximum(1)) and (
                    now < record.expires
                    or self.last_usable(record, now, 0)):
                record.returned = now
                record.fresh = False
                self._give_back(record, now)
                return
            job = self.retire_taken(record)
        self.dispatch([job])

    def checkin_to_reset(self, key: Any, now: float) -> None:
        """A connection comes back not clean (a transaction open, a
        statement cancelled mid-way): a reset job cleans it, then back to
        the pool, or replaced. The asyncio face's check-in: no I/O in the
        task checking in, so a cancel there can lose nothing."""
        with self.lock:
            record = self.untake(key)
            if record is None:       # closed by the pool while held
                return
            self.counters.checked_in(now - record.checked_out)
            record.fresh = False
            job = self.send_out(record, ResetConnection)
        self.dispatch([job])

    def _give_back(self, record: PoolConnection, now: float) -> None:
        """A usable connection goes to the first waiter that takes it, or
        idle if nobody waits. The one place a connection is handed to a
        waiter."""
        record.stack = None
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            self.counters.wait_seconds += now - waiter.since
            # _lend, inlined: every check-in under load comes here.
            record.checked_out = now
            record.owner = waiter.owner
            record.leak_reported = False
            self.in_use[record.key] = record
            if waiter.hand(record):
                if not waiter.counted:
                    self.counters.checkouts += 1
                break
            del self.in_use[record.key]         # gone: the next one
        else:
            record.fresh = False
            self.idle.push(record)
        if self.watchers:
            self.tell_watchers()

    def tell_watchers(self) -> None:
        # Whenever a connection turns idle or the checked-out ones shrink.
        for watcher in self.watchers:
            watcher()

    # -- Retiring -----------------------------------------------------------

    def over_a_lowered_maximum(self, extra: int) -> bool:
        """See Slots.over_a_lowered_maximum (lock held)."""
        return self.slots.over_a_lowered_maximum(self.open_count() + extra)

    def last_usable(self, record: PoolConnection, now: float,
                     counted: int) -> bool:
        """A connection past its own (jittered) age limit but not yet past
        stale_timeout is kept while no other connection is open (besides
        the ``counted`` ones, itself included): retiring it would leave the
        pool nothing to serve with until a replacement connects, which is
        what the jitter is there to avoid. (Not after recycle().)"""
        stale = self.options.stale_timeout
        if (stale is None or record.recycled
                or now - record.opened >= stale):
            return False
        return (len(self.idle) + len(self.in_use) + len(self.slots.out)
                <= counted)

    def retire_taken(self, record: PoolConnection) -> Job:
        # Out of idle and in_use: a worker closes it and, unless the pool
        # is shrinking or close_all() doomed it, opens its replacement in
        # the same slot.
        self.tell_watchers()
        if self.slots.shrinking or record.doomed:
            return self.close_taken(record)
        self.slots.closing += 1
        self.slots.replacing += 1
        return ReplaceConnection(self, record)

    def close_taken(self, record: PoolConnection) -> Job:
        self.slots.closing += 1
        return CloseConnection(self, record)

    def send_out(self, record: PoolConnection,
                  kind: Type[Job]) -> Job:
        # Out of idle and in_use for a ping or a reset, its slot held.
        self.slots.out[record.key] = record
        self.tell_watchers()
        return kind(self, record)

    # -- Results of jobs (called by the workers; they return follow-ups) -----

    def opened(self, job: OpenConnection, record: PoolConnection,
               now: float, took: float) -> Jobs:
        """A connect succeeded (in ``took`` seconds): the connection goes to
        the first waiter or the heap; or, if the pool was closed meanwhile,
        to be closed."""
        with self.lock:
            self.slots.settle(job)
            self.slots.opening.remove(job)
            self.counters.connected(took)
            self.failing = None
            if not job.current or self.over_a_lowered_maximum(1):
                return [self.close_taken(record)]
            record.connect_seconds = took       # its age limit's jitter
            record.set_age_limit(self.options.stale_timeout)
            if job.started < self.recycled_at:
                record.recycle()
            self._give_back(record, now)
            return []

    def open_failed(self, job: OpenConnection, error: BaseException,
                    retryable: bool, now: float, margin: float,
                    could_not_connect: Callable[[BaseException],
                                                BaseException]) -> bool:
        """A connect attempt failed; True if the job is to retry until its
        deadline. The waiters hear of it as WaitQueue.connect_failed says.
        A job that gives up frees its slot."""
        with self.lock:
            self.slots.settle(job)    # a retry is a new attempt, on its way
            self.failing = error
            self.counters.connect_failed()
            if not job.current:
                retryable = False
            else:
                self.waiters.connect_failed(error, retryable, now, margin,
                                            self.counters, could_not_connect)
            if (retryable and job.deadline is not None
                    and now + margin < job.deadline):
                return True
            self.slots.opening.remove(job)
            # No refill right after a failure (a connect that cannot work
            # would be retried in a loop): the housekeeper's next round.
            jobs = self.start_for_waiters(now)
        self.dispatch(jobs)
        return False

    def open_cancelled(self, job: OpenConnection, now: float) -> Jobs:
        """An open job that will not run (its pool was closed)."""
        with self.lock:
            self.slots.settle(job)
            self.slots.opening.remove(job)
            return self.start_for_waiters(now)

    def closed(self, job: CloseConnection, now: float) -> Jobs:
        """A close finished. A replacement goes on to open the new
        connection in the same slot."""
        with self.lock:
            self.slots.settle(job)
            self.slots.closing -= 1
            self.counters.closed_some(1)
            if job.replace:
                self.slots.replacing -= 1
                if job.current and not self.over_a_lowered_maximum(1):
                    return [self._open(math.inf, now)]
            return self.slot_freed(now)

    def checked(self, job: Job, usable: bool, now: float) -> Jobs:
        """A connection out for a ping or a reset came back: to the pool if
        it is usable (and not recycled meanwhile), else replaced."""
        with self.lock:
            self.slots.settle(job)
            record = job.record
            assert record is not None
            del self.slots.out[record.key]
            if not job.current:
                return [self.close_taken(record)]
            if (usable and not record.recycled
                    and not self.over_a_lowered_maximum(1)):
                record.returned = now
                self._give_back(record, now)
                return []
            return [self.retire_taken(record)]

    def slot_freed(self, now: float) -> Jobs:
        """A slot came free: waiters that nothing on its way covers get a
        connect of their own; then the minimum is refilled."""
        self.over_a_lowered_maximum(0)
        return self.start_for_waiters(now) + self.fill_up()

    def start_for_waiters(self, now: float) -> Jobs:
        jobs: Jobs = []
        while (len(self.waiters) > self.slots.coming
               and self.free_slots() > 0 and not self.slots.shrinking):
            waiter = self.waiters[self.slots.coming]
            jobs.append(self._open(waiter.deadline, now))
        return jobs

    def fill_up(self) -> Jobs:
        """Open connections up to min_connections (never above the max)."""
        jobs: Jobs = []
        now = time.monotonic()
        # One being replaced counts: its replacement opens in its slot.
        while (self.started
               and self.open_count() + self.slots.replacing
               < self.options.min_connections
               and self.free_slots() > 0 and not self.slots.shrinking
               and not self.draining):
            jobs.append(self._open(math.inf, now))
        return jobs

    def stats(self) -> Dict[str, Any]:
        with self.lock:
            return self.counters.snapshot(
                self.options.max_connections, len(self.idle),
                len(self.in_use), len(self.waiters))
