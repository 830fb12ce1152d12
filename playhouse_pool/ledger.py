"""The pool's ledger: which connections are idle, which are checked out,
which slots work under way holds, and who waits. One lock, no I/O, no peewee.

Every change of a connection's place happens here, under ``lock``. What
needs I/O (opening, closing, pinging, resetting a connection) leaves the
ledger as a :class:`~playhouse_pool.records.Job` for the caller to hand to
the workers once the lock is released; the job's slot stays reserved until
its result is published back here. So ``idle + in use + reserved`` never
exceeds ``max_connections`` (rule 7), and nothing slow ever runs under the
lock (rule 1). Operations over many connections at once (close_all, the
housekeeper's rounds) are in ``sweeps.py``.

Where a connection goes when it comes free (a check-in, a new connection, a
keepalive ping that passed): ``_give_back``, the one place a connection is
handed to a waiter: the first one, directly (rule 2).
"""
import heapq
import itertools
import math
import threading
import time
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Tuple, Union

from ._options import PoolOptions
from .errors import (HOLDERS_SHOWN, DryPool, Holder, PoolClosedError,
                     pool_exhausted)
from .events import PoolEvents
from .records import (Job, Jobs, Owner, PoolConnection, Waiter, call_site,
                      thread_name)
from .sweeps import Sweeps


class Ledger(Sweeps):
    """The bookkeeping of one pool. Methods take ``lock`` themselves; those
    named ``_...`` expect it held. Jobs returned are for the workers."""

    def __init__(self, options: PoolOptions, events: PoolEvents) -> None:
        self.options = options
        # The metrics collectors' listeners, told at each event, under this
        # lock (they never block: events.py).
        self.events = events
        self.lock = threading.RLock()
        self.drained = threading.Condition(self.lock)
        self.idle: List[Tuple[float, int, PoolConnection]] = []   # a heap
        self.in_use: Dict[int, PoolConnection] = {}
        # Connections the pool closed while a thread held them (close_all,
        # close_stale): that thread's close() must not put the dead
        # connection back. key -> holder, so dead holders expire.
        self.closed_keys: Dict[int, Owner] = {}
        self.waiters: Deque[Waiter] = deque()
        self.opening: List[Job] = []   # open jobs under way (slots held)
        self.busy = 0         # connections out for a ping or a reset
        self.closing = 0      # slots held by a close under way
        self.replacing = 0    # of which a replacement opens next
        self.draining = 0     # close_all(timeout) calls waiting
        # Jobs among those above (opening, busy, replacing) whose I/O ran
        # past its deadline with nothing to cut it short: not counted on.
        self.overdue_jobs = 0
        # init() lowered max_connections below what is open: check-ins
        # close connections (and freed slots go unused) until it holds.
        self.shrinking = False
        # close_all() and fork bump it: work started before belongs to a
        # pool that is gone, and its connection is closed when it lands.
        self.epoch = 0
        # The last connect error of a run of failures (None once a connect
        # succeeds): a waiter that times out meanwhile says why.
        self.failing: Optional[BaseException] = None
        # recycle(): connections opened before this are replaced.
        self.recycled_at = -math.inf
        # Connections out of idle and in_use for a ping or a reset: kept
        # referenced here so that a fork never frees (and closes) them.
        self.out: Dict[int, PoolConnection] = {}
        # The workers run (from the first checkout until close_all): the
        # minimum is kept open only then.
        self.started = False
        self.warming = 0      # warm_up() calls waiting
        self._seq = itertools.count()
        self.n_created = self.n_closed = self.n_checkouts = 0
        self.n_timeouts = self.n_reclaimed = self.n_recycled = 0
        self.n_recovered = self.n_connect_errors = 0
        self.n_io_timeouts = 0
        self.use_total = self.connect_total = 0.0
        self.wait_total = 0.0

    # -- Counting -----------------------------------------------------------

    @property
    def reserved(self) -> int:
        return len(self.opening) + self.busy + self.closing

    def open_count(self) -> int:
        """Connections that exist or are being opened (not being closed)."""
        return (len(self.idle) + len(self.in_use) + len(self.opening)
                + self.busy)

    def _over_limit(self, extra: int) -> int:
        """By how much open connections and reserved slots, plus ``extra``,
        exceed max_connections (0 or less: they don't)."""
        limit = self.options.max_connections
        if limit is None:
            return 0
        return self.open_count() + self.closing + extra - limit

    def _has_free_slot(self) -> bool:
        return self._over_limit(1) <= 0

    def _still_shrinking(self, extra: int) -> bool:
        # While shrinking: True if ``extra`` more connections would exceed
        # the maximum (those being closed are on their way out); clears
        # ``shrinking`` once it holds.
        limit = self.options.max_connections
        if limit is not None and self.open_count() + extra > limit:
            return True
        self.shrinking = False
        return False

    # -- Checkout -----------------------------------------------------------

    def checkout(self, owner: Owner, now: float, since: float,
                 counted: bool = False) -> Union[PoolConnection, 'Waiter']:
        """The oldest idle connection, now checked out by ``owner``; with
        none, a queued Waiter, whose ``jobs`` (a connect for it, if nothing
        on its way covers it) and ``reclaimed`` the caller submits and logs
        once the lock is released. ``since``: when the checkout started
        (its deadline counts from then). The hot path: one lock, one heap
        pop. Raises MaxConnectionsExceeded if nothing can serve this thread
        in time, PoolClosedError while close_all() drains the pool.
        ``counted``: this checkout was counted already (it looks again after
        a connection it was handed failed its checks): a checkout counts
        once, however many connections it goes through."""
        with self.lock:
            if self.idle and not self.draining:
                record = heapq.heappop(self.idle)[2]
                self._take(record, owner, now, counted)
                return record
            return self._enqueue(owner, since, counted)

    def _take(self, record: PoolConnection, owner: Owner, now: float,
              counted: bool) -> None:
        record.checked_out = now
        record.owner = owner
        record.leak_reported = False
        self.in_use[record.key] = record
        if not counted:
            self.n_checkouts += 1

    def _enqueue(self, owner: Owner, since: float,
                 counted: bool) -> 'Waiter':
        if self.draining:
            raise PoolClosedError('The pool is shutting down '
                                  '(close_all is draining it).')
        options = self.options
        reclaimed: List[Tuple[int, str]] = []
        jobs: Jobs = []
        if not self.waiters and not self._has_free_slot():
            # Threads' guards reclaim at thread exit; this scan for dead
            # owners is the fallback, run by the first thread about to wait
            # with the pool full, not by each one queueing behind it: it
            # costs an is_alive() per checked-out connection.
            reclaimed, jobs = self.reclaim()
        # What is already on its way covers the waiters in order; beyond
        # that, a connect of their own if a slot is free; else only a
        # check-in can serve this one.
        if len(self.waiters) >= self._coming():
            if self._has_free_slot() and not self.shrinking:
                wait = options.wait_seconds
                jobs.append(self._open_job(
                    None if wait is None else since + wait))
            elif options.wait_seconds is None:
                self._count_timeout()
                raise pool_exhausted(
                    'all in use, and timeout=None does not wait for one',
                    time.monotonic() - since, self._dry())
            elif (options.max_waiting is not None
                  and len(self.waiters) >= options.max_waiting):
                self._count_timeout()
                raise pool_exhausted(
                    'max_waiting=%d threads are already waiting'
                    % options.max_waiting, time.monotonic() - since,
                    self._dry())
        wait = options.wait_seconds
        waiter = Waiter(owner, since, None if wait is None else since + wait)
        waiter.jobs, waiter.reclaimed = jobs, reclaimed
        waiter.counted = counted
        self.waiters.append(waiter)
        return waiter

    def _coming(self) -> int:
        """Connections on their way to the waiters: connects under way
        (replacements included) and connections out for a ping or reset,
        less those overdue (a connect that may never end is not on its
        way)."""
        return (len(self.opening) + self.replacing + self.busy
                - self.overdue_jobs)

    def _open_job(self, deadline: Optional[float] = math.inf) -> Job:
        job = Job(Job.OPEN, None, self.epoch, deadline)
        self.opening.append(job)
        return job

    def timed_out(self, waiter: Waiter, now: float
                  ) -> Tuple[bool, Optional[BaseException],
                             Optional[DryPool], str]:
        """The waiter's deadline passed. Returns (give up?, the connect
        error of the moment if connects are failing, the pool's figures for
        the error's message, what it waited for in a few words). It gives
        up unless it was served meanwhile: whatever it counted on, a connect
        under way included (DESIGN.md rule 9). A connection that comes
        later goes to the next waiter or the heap."""
        with self.lock:
            if waiter not in self.waiters:
                return False, None, None, ''
            awaited = self._awaited(waiter, now)
            self.waiters.remove(waiter)
            self._count_timeout()
            self.wait_total += now - waiter.since
            return True, self.failing, self._dry(), awaited

    def _awaited(self, waiter: Waiter, now: float) -> str:
        # What was on its way to this waiter: the connects under way cover
        # the first waiters, then connections out for a ping or reset.
        position = self.waiters.index(waiter)
        connects = [job for job in self.opening if not job.overdue]
        if position < len(connects):
            return 'a connect under way (no answer for %.1fs)' % (
                now - min(job.started for job in connects))
        if position < self._coming():
            return 'a connection being checked or replaced'
        return 'a connection to be checked in'

    def _dry(self) -> DryPool:
        """The figures a refused checkout's message gives, with the
        longest holders."""
        now = time.monotonic()
        longest = heapq.nsmallest(HOLDERS_SHOWN, self.in_use.values(),
                                  key=lambda r: r.checked_out)
        return DryPool(
            self.options.max_connections, len(self.idle) + len(self.in_use),
            len(self.in_use), len(self.waiters),
            [Holder(now - r.checked_out, thread_name(r), call_site(r))
             for r in longest],
            self.options.leak_timeout is not None)

    def abandon(self, waiter: Waiter) -> Optional[PoolConnection]:
        """A waiter leaves on an exception. Returns what it was handed
        meanwhile, for the caller to check back in, or None."""
        with self.lock:
            if waiter in self.waiters:
                self.waiters.remove(waiter)
                return None
        # Served: hand/fail ran under the lock, so the result is set; the
        # interrupted acquire may or may not have taken the signal.
        waiter.consume()
        return waiter.record

    def _next_waiter(self, now: float) -> Waiter:
        waiter = self.waiters.popleft()
        self.wait_total += now - waiter.since
        return waiter

    def fail_waiters(self, message: str) -> None:
        """Fail every waiter with PoolClosedError (each its own: one shared
        would chain every waiter's traceback and frames to the others')."""
        with self.lock:
            now = time.monotonic()
            while self.waiters:
                self._next_waiter(now).fail(PoolClosedError(message))

    # -- Check-in -----------------------------------------------------------

    def checkin(self, key: int, reusable: bool, now: float) -> Jobs:
        """A checked-out connection comes back: to the first waiter or the
        idle heap; past its age, broken or over a lowered maximum, to a
        worker that closes it (and opens a replacement)."""
        with self.lock:
            record = self.in_use.pop(key, None)
            if record is None:
                # Closed by the pool while held (close_all, close_stale).
                self.closed_keys.pop(key, None)
                return []
            self._count_checkin(record, now)
            if reusable and not (self.shrinking
                                 and self._still_shrinking(1)) and (
                    now < record.expires or self._last_usable(record, now,
                                                              0)):
                record.returned = now
                record.fresh = False
                self._give_back(record, now)
                return []
            return [self._retire(record, now)]

    def _give_back(self, record: PoolConnection, now: float) -> None:
        """A usable connection goes to the first waiter, or idle if nobody
        waits. The one place a connection is handed to a waiter."""
        record.stack = None
        if self.waiters:
            waiter = self._next_waiter(now)
            self._take(record, waiter.owner, now, waiter.counted)
            waiter.hand(record)
        else:
            record.fresh = False
            heapq.heappush(self.idle, (record.opened, next(self._seq),
                                       record))
        if self.draining or self.warming:
            self._notify_drained()

    def _notify_drained(self) -> None:
        # Whenever in_use shrinks (close_all(timeout) may wait for it to
        # empty) or a connection turns idle (warm_up() may wait for it).
        # (While draining, at every change: close_all() may be waiting for
        # all but its caller's own.)
        if self.draining or self.warming:
            self.drained.notify_all()

    # -- Retiring -----------------------------------------------------------

    def _last_usable(self, record: PoolConnection, now: float,
                     counted: int) -> bool:
        """A connection past its own (jittered) age limit but not yet past
        stale_timeout is kept while no other connection is open (besides
        the ``counted`` ones, itself included): retiring it would leave the
        pool nothing to serve with until a replacement connects, which is
        what the jitter is there to avoid. (Not after recycle().)"""
        stale = self.options.stale_timeout
        if (stale is None or record.expires == -math.inf
                or now - record.opened >= stale):
            return False
        return len(self.idle) + len(self.in_use) + self.busy <= counted

    def keep_expired(self, record: PoolConnection, now: float) -> bool:
        """At checkout: may this connection, past its own age limit, still
        be used (it is the last one open)?"""
        with self.lock:
            return self._last_usable(record, now, 1)

    def _retire(self, record: PoolConnection, now: float) -> Job:
        # Not in idle or in_use any more: a worker closes it and, unless
        # the pool is shrinking or close_all() doomed it, opens its
        # replacement in the same slot.
        self.closing += 1
        self._notify_drained()
        if self.shrinking or record.doomed:
            return Job(Job.CLOSE, record, self.epoch)
        self.replacing += 1
        return Job(Job.REPLACE, record, self.epoch)

    def retire(self, record: PoolConnection, now: float) -> List[Job]:
        """A checked-out connection was found dead or past its age at
        checkout: replaced by a worker. Nothing if the pool took it back
        meanwhile (close_all, close_stale)."""
        with self.lock:
            if self.in_use.pop(record.key, None) is None:
                self.closed_keys.pop(record.key, None)
                return []
            return [self._retire(record, now)]

    def check_later(self, record: PoolConnection) -> List[Job]:
        """A checked-out connection whose socket has something to say: a
        worker pings it and puts it back, or replaces it."""
        with self.lock:
            if self.in_use.pop(record.key, None) is None:
                self.closed_keys.pop(record.key, None)
                return []
            return [self._send_out(record, Job.PING)]

    def _send_out(self, record: PoolConnection, kind: str) -> Job:
        # Out of idle and in_use for a ping or a reset, its slot held.
        self.busy += 1
        self.out[record.key] = record
        self._notify_drained()
        return Job(kind, record, self.epoch)

    def recycle(self, now: float) -> Tuple[Jobs, int]:
        """Every connection is to be replaced: idle ones now, checked-out
        ones at check-in, connects under way when they land."""
        with self.lock:
            for record in self.in_use.values():
                record.expires = -math.inf
            idle = [entry[2] for entry in self.idle]
            self.idle = []
            count = len(idle) + len(self.in_use) + len(self.opening)
            self.n_recycled += count
            self.recycled_at = now
            jobs = [self._retire(record, now) for record in idle]
            return jobs, count

    # -- Results of jobs ----------------------------------------------------

    def opened(self, job: Job, record: PoolConnection, now: float,
               took: float) -> Jobs:
        """A connect succeeded (in ``took`` seconds): the connection goes to
        the first waiter or the heap; or, if the pool was closed meanwhile,
        to be closed."""
        with self.lock:
            self._settle(job)
            self.opening.remove(job)
            self.n_created += 1
            self.connect_total += took
            if self.events.listeners:
                self.events.connected(took)
            self.failing = None
            if job.epoch != self.epoch or (
                    self.shrinking and self._still_shrinking(1)):
                self.closing += 1
                return [Job(Job.CLOSE, record, self.epoch)]
            if job.started < self.recycled_at:
                record.expires = -math.inf
            self._give_back(record, now)
            return []

    def open_failed(self, job: Job, error: BaseException, retryable: bool,
                    now: float, margin: float
                    ) -> Tuple[bool, List[Waiter], List[Waiter]]:
        """A connect attempt failed. Returns (retry?, waiters to fail with
        ``error`` itself, waiters to fail because the pool could not
        connect within their timeout); those waiters are out of the queue
        already, and the caller fails them. A job that gives up frees its
        slot.

        Who hears of it: an error not worth a retry goes to the first
        waiter at once; a retryable one to the first waiter that may not
        wait (timeout=None: the first error surfaces at once); when the
        job's own deadline comes, every waiter whose deadline is as near.
        """
        with self.lock:
            self._settle(job)       # a retry is a new attempt, on its way
            self.failing = error
            self.n_connect_errors += 1
            if self.events.listeners:
                self.events.connect_failed()
            at_once: List[Waiter] = []
            if job.epoch == self.epoch:
                for waiter in self.waiters:
                    if not retryable or waiter.deadline is None:
                        at_once.append(self._remove_waiter(waiter, now))
                        break
            timed_out: List[Waiter] = []
            if retryable and job.epoch == self.epoch:
                # Waiters whose time is up (or about to be) hear that the
                # pool could not connect.
                for waiter in list(self.waiters):
                    if (waiter.deadline is not None
                            and waiter.deadline <= now + margin):
                        timed_out.append(self._remove_waiter(waiter, now))
                        self._count_timeout()
            deadline = job.deadline
            if (retryable and deadline is not None
                    and now + margin < deadline and job.epoch == self.epoch):
                return True, at_once, timed_out
            self.opening.remove(job)
            # No refill right after a failure (a connect that cannot work
            # would be retried in a loop): the housekeeper's next round.
            self._start_for_waiters()
            return False, at_once, timed_out

    def _count_timeout(self) -> None:
        self.n_timeouts += 1
        if self.events.listeners:
            self.events.timeout()

    def _count_checkin(self, record: PoolConnection, now: float) -> None:
        use = now - record.checked_out
        self.use_total += use
        if self.events.listeners:
            self.events.checkin(use)

    def _count_closed(self, count: int) -> None:
        self.n_closed += count
        if self.events.listeners:
            self.events.closed(count)

    def _remove_waiter(self, waiter: Waiter, now: float) -> Waiter:
        self.waiters.remove(waiter)
        self.wait_total += now - waiter.since
        return waiter

    def cancelled(self, job: Job) -> Jobs:
        """An open job that will not run (its pool was closed)."""
        with self.lock:
            self._settle(job)
            self.opening.remove(job)
            return self._start_for_waiters()

    def closed(self, job: Job, now: float) -> Jobs:
        """A close finished. A REPLACE job goes on to open the replacement
        in the same slot (returned as a job to run at once)."""
        with self.lock:
            self._settle(job)
            self.closing -= 1
            self._count_closed(1)
            if job.kind == Job.REPLACE:
                self.replacing -= 1
            if (job.kind == Job.REPLACE and job.epoch == self.epoch
                    and not (self.shrinking and self._still_shrinking(1))):
                return [self._open_job()]
            return self._slot_freed(now)

    def pinged(self, job: Job, alive: bool, now: float) -> Jobs:
        """A keepalive ping, or a reset of a reclaimed connection, ended."""
        with self.lock:
            self._settle(job)
            record = job.record
            assert record is not None
            self.busy -= 1
            del self.out[record.key]
            if alive and job.epoch == self.epoch and not (
                    self.shrinking and self._still_shrinking(1)):
                record.returned = now
                self._give_back(record, now)
                return []
            if job.epoch != self.epoch:
                self.closing += 1
                return [Job(Job.CLOSE, record, self.epoch)]
            return [self._retire(record, now)]

    def overdue(self, jobs: List[Optional[Job]], count: int) -> Jobs:
        """``count`` pieces of the pool's own I/O ran past their deadline
        (the watchdog's, workers.py); ``jobs``: those of them under way for
        a job that nothing could cut short. Waiters stop counting on those
        (their slots stay held: the connection may exist on the server),
        and get connects of their own where slots are free. The caller
        holds the watchdog's lock, so each job is still under way."""
        with self.lock:
            self.n_io_timeouts += count
            for job in jobs:
                if (job is not None and job.kind != Job.CLOSE
                        and not job.overdue):
                    job.overdue = True
                    self.overdue_jobs += 1
            return self._start_for_waiters()

    def _settle(self, job: Job) -> None:
        # A job reports back: if overdue, it is counted on no more.
        if job.overdue:
            job.overdue = False
            self.overdue_jobs -= 1

    def _slot_freed(self, now: float) -> Jobs:
        """A slot came free: waiters that nothing on its way covers get a
        connect of their own; then the minimum is refilled."""
        if self.shrinking:
            self._still_shrinking(0)
        return self._start_for_waiters() + self._fill(now)

    def _start_for_waiters(self) -> Jobs:
        jobs: Jobs = []
        while (len(self.waiters) > self._coming()
               and self._has_free_slot() and not self.shrinking):
            waiter = self.waiters[self._coming()]
            jobs.append(self._open_job(waiter.deadline))
        return jobs

    def _fill(self, now: float) -> Jobs:
        """Open connections up to min_connections (never above the max).
        One being replaced counts: its replacement opens in its slot."""
        jobs: Jobs = []
        minimum = self.options.min_connections
        while (self.started and self.open_count() + self.replacing < minimum
               and self._has_free_slot() and not self.shrinking
               and not self.draining):
            jobs.append(self._open_job())
        return jobs

    def fill(self, now: float) -> Jobs:
        with self.lock:
            return self._fill(now)

    # -- Reclaiming what threads abandoned -----------------------------------

    def reclaim(self, ended: Owner = None) -> Tuple[List[Tuple[int, str]],
                                                     Jobs]:
        """Take back connections held by a thread that ended without
        close() (``ended``, from its guard; or any dead owner). A worker
        rolls each back, then returns it. Returns (connection key, thread
        name) pairs to log once the lock is released, and the jobs."""
        def gone(thread: Owner) -> bool:
            if ended is not None:
                return thread is ended
            return thread is not None and not thread.is_alive()

        with self.lock:
            dead = [r for r in self.in_use.values() if gone(r.owner)]
            names = [(r.key, thread_name(r)) for r in dead]
            jobs = []
            now = time.monotonic()
            for record in dead:
                del self.in_use[record.key]
                self.n_reclaimed += 1
                self._count_checkin(record, now)     # a check-in, of sorts
                jobs.append(self._send_out(record, Job.RESET))
            for key, holder in list(self.closed_keys.items()):
                if gone(holder):
                    del self.closed_keys[key]
            if dead:
                self._notify_drained()
            return names, jobs

    def stats(self) -> Dict[str, Any]:
        with self.lock:
            idle = len(self.idle)
            in_use = len(self.in_use)
            return {
                'max_connections': self.options.max_connections or 0,
                'open': idle + in_use,
                'in_use': in_use,
                'idle': idle,
                'waiting': len(self.waiters),
                'created': self.n_created,
                'closed': self.n_closed,
                'checkouts': self.n_checkouts,
                'timeouts': self.n_timeouts,
                'reclaimed': self.n_reclaimed,
                'recycled': self.n_recycled,
                'recovered': self.n_recovered,
                'use_seconds': self.use_total,
                'connect_seconds': self.connect_total,
                'connect_errors': self.n_connect_errors,
                'io_timeouts': self.n_io_timeouts,
                'wait_seconds': self.wait_total,
            }
