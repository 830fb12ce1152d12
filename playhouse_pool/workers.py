"""The pool's workers: a connection's birth, ageing and death, off the
request path (DESIGN.md rule 8).

* :class:`Workers` runs the ledger's jobs (open, close, replace, ping,
  reset) on threads of its own: as many at once as there are jobs, so 16
  connects run in parallel; a thread idle for a while ends. Under gevent's
  monkey-patching they are greenlets.
* :func:`run_job` is what each job does: the I/O outside every lock, then
  its result published to the ledger, which may hand back more work.
* :class:`Housekeeper` is one thread per pool that wakes when something is
  due: idle connections past ``ping_after`` pinged, past their age
  replaced, past ``idle_timeout`` closed, dead ones found by their socket,
  leaks reported, dead threads' connections reclaimed, the minimum refilled.

Both start lazily, on the first checkout that finds no idle connection
(never at import or construction: apps are imported, then forked), stop in
``close_all()``, and are replaced in a forked child. They hold the pool by a
weak reference: a forgotten pool is collected and its threads end.
"""
import logging
import random
import threading
import time
import traceback
import weakref
from collections import deque
from typing import Any, Deque, List

from .records import Job, Jobs, Waiter, thread_name

logger = logging.getLogger('playhouse_pool')

# A worker thread with nothing to do for this long ends.
_IDLE_SECONDS = 10.0
# Connect retries: capped exponential backoff, jittered.
_BACKOFF_FIRST = 0.05
_BACKOFF_CAP = 2.0
# The last retry is made this much (at most) before the deadline, so that
# its verdict reaches the waiters by then; never more than 5% of timeout.
_FINAL_MARGIN = 0.1
# The housekeeper wakes at least this often, and never more often than
# every _MIN_TICK.
_MAX_TICK = 60.0
_MIN_TICK = 0.01

# Connect errors worth another attempt inside the deadline: the server is
# down, restarting or out of slots. Anything else (bad keyword, missing
# driver, bad credentials as ProgrammingError) surfaces at once. Told by the
# DB-API class names, as peewee maps driver errors: peewee 3.17 passes
# psycopg 3's own errors through unconverted.
_RETRYABLE_NAMES = frozenset(('OperationalError', 'InterfaceError'))


def retryable(exc: BaseException) -> bool:
    return isinstance(exc, OSError) or any(
        cls.__name__ in _RETRYABLE_NAMES for cls in type(exc).__mro__)


class Workers:
    """Threads that run one pool's jobs."""

    def __init__(self, pool: Any) -> None:
        self._pool = weakref.ref(pool)
        # Reentrant: close_all() from a signal handler stops the workers,
        # possibly while the thread it interrupted is in submit().
        self._lock = threading.RLock()
        self._jobs: Deque[Job] = deque()
        self._idle: List[threading.Lock] = []   # signals of idle threads
        self._stopped = False
        self.threads = 0
        # Wakes connect-retry sleeps when the pool closes.
        self.stopping = threading.Event()

    def submit(self, jobs: Jobs) -> None:
        for job in jobs:
            with self._lock:
                self._jobs.append(job)
                try:
                    # stop() in a signal handler may empty it right here.
                    idle = self._idle.pop()
                except IndexError:
                    idle = None
                if idle is not None:
                    idle.release()                # that thread takes it
                    continue
                self.threads += 1
            thread = threading.Thread(target=self._work, daemon=True,
                                      name='playhouse_pool-worker')
            thread.start()

    def stop(self) -> None:
        """Jobs still queued run (their results go nowhere: the ledger's
        epoch moved on), then every thread ends; retry sleeps end now."""
        self.stopping.set()
        with self._lock:
            self._stopped = True
            while self._idle:
                self._idle.pop().release()

    def _work(self) -> None:
        signal = threading.Lock()
        signal.acquire()
        try:
            while True:
                with self._lock:
                    job = self._jobs.popleft() if self._jobs else None
                    if job is None:
                        if self._stopped:
                            return
                        self._idle.append(signal)
                if job is not None:
                    self._run(job)
                    continue
                if signal.acquire(timeout=_IDLE_SECONDS):
                    continue            # woken: a job, or stop
                with self._lock:
                    if signal in self._idle:
                        self._idle.remove(signal)
                        return
                signal.acquire()        # woken as the wait ended: consume
        finally:
            with self._lock:
                self.threads -= 1

    def _run(self, job: Job) -> None:
        pool = self._pool()
        if pool is None:
            return
        try:
            run_job(pool, job, self)
        except Exception:              # a bug: never kill the worker
            logger.exception('playhouse_pool worker failed on a %s job.',
                             job.kind)


def run_job(pool: Any, job: Job, workers: Workers) -> None:
    """Do ``job``'s I/O, publish the result; follow-up work runs here too
    (a replacement after its close) or goes to other workers."""
    while True:
        if workers.stopping.is_set() and job.epoch == pool._ledger.epoch:
            # Work of the pool as it is now, queued on workers that were
            # stopped (close_all ran meanwhile): the current ones take it.
            pool._submit([job])
            return
        follow = _STEPS[job.kind](pool, job, workers)
        if not follow:
            return
        job = follow[0]
        pool._submit(follow[1:])


def _open(pool: Any, job: Job, workers: Workers) -> Jobs:
    ledger = pool._ledger
    timeout = pool._pool_options.timeout or 0.0
    margin = min(_FINAL_MARGIN, 0.05 * timeout)
    while True:
        if job.epoch != ledger.epoch:
            return ledger.cancelled(job)
        if workers.stopping.is_set():
            pool._submit([job])          # to the workers of the pool now
            return []
        job.attempts += 1
        began = time.monotonic()
        try:
            record = pool._new_connection()
        except Exception as exc:
            exc.__traceback__ = None    # kept by the ledger: no frames
            again, at_once, timed_out = ledger.open_failed(
                job, exc, retryable(exc), time.monotonic(), margin)
            _fail_waiters(pool, exc, at_once, timed_out)
            if not again:
                logger.warning('Connect attempt %d to %s failed (%s); giving '
                               'up.', job.attempts, pool._safe_name(),
                               pool._safe_error(exc))
                return []
            delay = min(_BACKOFF_CAP,
                        _BACKOFF_FIRST * 2 ** (job.attempts - 1))
            delay *= random.uniform(0.5, 1.0)
            # The last attempt is made at the deadline (less the margin).
            assert job.deadline is not None     # else: no retry
            delay = max(min(delay, job.deadline - margin - time.monotonic()),
                        0.0)
            logger.warning('Connect attempt %d to %s failed (%s); retrying '
                           'in %.2fs.', job.attempts, pool._safe_name(),
                           pool._safe_error(exc), delay)
            workers.stopping.wait(delay)
            continue
        logger.debug('Opened connection %x.', record.key)
        now = time.monotonic()
        return ledger.opened(job, record, now, now - began)


def _fail_waiters(pool: Any, exc: BaseException, at_once: List[Waiter],
                  timed_out: List[Waiter]) -> None:
    for waiter in at_once:
        waiter.fail(exc)
    for waiter in timed_out:
        waiter.fail(pool._could_not_connect(exc))


def _close(pool: Any, job: Job, workers: Workers) -> Jobs:
    assert job.record is not None
    pool._close_raw(job.record.conn)
    return pool._ledger.closed(job, time.monotonic())


def _ping(pool: Any, job: Job, workers: Workers) -> Jobs:
    record = job.record
    assert record is not None
    try:
        alive = bool(pool._ping(record.conn))
    except Exception:
        alive = False
    if not alive:
        logger.info('Connection %x failed its ping; replacing it.',
                    record.key)
    return pool._ledger.pinged(job, alive, time.monotonic())


def _reset(pool: Any, job: Job, workers: Workers) -> Jobs:
    # A connection reclaimed from a thread that ended: cleaned as at
    # check-in, then back (or replaced).
    assert job.record is not None
    clean = pool._reset(job.record.conn)
    return pool._ledger.pinged(job, clean, time.monotonic())


_STEPS = {Job.OPEN: _open, Job.CLOSE: _close, Job.REPLACE: _close,
          Job.PING: _ping, Job.RESET: _reset}


class Housekeeper(threading.Thread):
    """Wakes when the pool has something due, and does it (``housekeep``)."""

    def __init__(self, pool: Any) -> None:
        super().__init__(name='playhouse_pool-housekeeper', daemon=True)
        self._pool = weakref.ref(pool)
        self._wake = threading.Event()
        self._stopped = False

    def wake(self) -> None:
        """Plan again now (the options or the pool changed)."""
        self._wake.set()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    def run(self) -> None:
        while not self._stopped:
            pool = self._pool()
            if pool is None:
                return
            try:
                interval = housekeep(pool)
            except Exception:
                logger.exception('playhouse_pool housekeeping failed.')
                interval = _MAX_TICK
            del pool       # hold no strong reference while asleep
            self._wake.wait(interval)
            self._wake.clear()


def housekeep(pool: Any) -> float:
    """One round; returns seconds until the next."""
    options = pool._pool_options
    ledger = pool._ledger
    now = time.monotonic()
    jobs = ledger.probe_idle()
    if options.stale_timeout is not None:
        jobs += ledger.retire_expired_idle(now)
    if options.idle_timeout is not None:
        jobs += ledger.evict_idle(now, options.idle_timeout)
    if options.ping_after:
        jobs += ledger.keepalive_due(now, options.ping_after)
    if options.leak_timeout is not None:
        _report_leaks(ledger.leaked(now, options.leak_timeout),
                      options.leak_timeout)
    reclaimed, more = ledger.reclaim()
    log_reclaimed(reclaimed)
    jobs += more + ledger.fill(now)
    pool._submit(jobs)
    return _interval(options, ledger.next_due(options) - time.monotonic())


def _interval(options: Any, until_due: float) -> float:
    # Whatever is due, checked at least every half of the shortest interval
    # the options set (a connection checked in after this round is due no
    # earlier than that).
    given = [t for t in (options.ping_after, options.stale_timeout,
                         options.idle_timeout, options.leak_timeout) if t]
    cap = min([_MAX_TICK] + [t / 2 for t in given])
    return max(_MIN_TICK, min(cap, until_due))


def _report_leaks(leaked: List[Any], leak_timeout: float) -> None:
    for record in leaked:
        logger.warning(
            'Connection %x has been checked out by thread %r for over '
            '%.3gs (leak_timeout); checked out at:\n%s', record.key,
            thread_name(record), leak_timeout,
            ''.join(traceback.format_list(record.stack or []))
            or '(stack not recorded)\n')


def log_reclaimed(reclaimed: List[Any]) -> None:
    for key, thread in reclaimed:
        logger.warning('Reclaimed connection %x from thread %r, which ended '
                       'without closing it.', key, thread)
