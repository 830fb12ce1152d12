"""The thread face's workers: threads that run the pool's jobs (jobs.py) and
the housekeeper's rounds (housekeeping.py), off the request path
(docs/design.rst, rule 8).

* :class:`Workers` runs jobs on threads of its own: as many at once as there
  are jobs, so 16 connects run in parallel; a thread idle for a while ends.
  Under gevent's monkey-patching they are greenlets.
* :class:`Housekeeper` is one thread per pool that wakes when something is
  due and runs a round.

Both start lazily, on the first checkout that finds no idle connection
(never at import or construction: apps are imported, then forked), stop in
``close_all()``, and are replaced in a forked child (lending.py).
"""
import logging
import threading
import time
import weakref
from collections import deque
from typing import Callable, Deque, List

from .housekeeping import MAX_TICK, MIN_TICK, Housekeeping
from .jobs import ConnectionIO, Job, Jobs, OpenConnection
from .watchdog import Watchdog

logger = logging.getLogger('playhouse_pool')

# A worker thread with nothing to do for this long ends.
IDLE_SECONDS = 10.0


def run_once(job: Job, io: ConnectionIO) -> Jobs:
    """Do ``job``'s I/O outside every lock and publish its outcome; returns
    its follow-ups. (An open job of a pool closed since does not run.)"""
    if isinstance(job, OpenConnection) and not job.current:
        return job.ledger.open_cancelled(job, time.monotonic())
    began = time.monotonic()
    try:
        result, error = job.call(io), None
    except Exception as exc:
        result, error = None, exc
    return job.report(io, result, error, began, time.monotonic())


class Workers:
    """Threads that run one pool's jobs. ``resubmit`` hands a job of the
    pool as it is now to whoever runs its jobs now: after ``stop()``,
    other workers."""

    def __init__(self, io: ConnectionIO, resubmit: Callable[[Jobs], None],
                 watchdog: Watchdog) -> None:
        self._io = io
        self._resubmit = resubmit
        self._watchdog = watchdog
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
                if signal.acquire(timeout=IDLE_SECONDS):
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
        """``job``, then its follow-ups: the first here (a replacement's
        connect after its close, a retry after its delay), the rest on
        other threads."""
        watchdog = self._watchdog
        try:
            while True:
                if self.stopping.is_set() and job.current:
                    # Work of the pool as it is now, queued on workers that
                    # were stopped (close_all ran meanwhile).
                    self._resubmit([job])
                    return
                if job.delay:
                    stopped = self.stopping.wait(job.delay)
                    job.delay = 0.0
                    if stopped:
                        continue
                # The watches of its I/O are this job's (watchdog.py).
                watchdog.on_behalf(job)
                follow = run_once(job, self._io)
                if not follow:
                    return
                job = follow[0]
                self._resubmit(follow[1:])
        except Exception:              # a bug: never kill the worker
            logger.exception('playhouse_pool worker failed on a %s job.',
                             job.kind)
        finally:
            watchdog.on_behalf(None)


class Housekeeper(threading.Thread):
    """Wakes when the pool has something due, and runs a round: first the
    watchdog's check of the pool's own I/O, then the housekeeping. Holds its
    pool's housekeeping by a weak reference: a forgotten pool is collected
    and this thread ends."""

    def __init__(self, housekeeping: Housekeeping,
                 watchdog: Watchdog) -> None:
        super().__init__(name='playhouse_pool-housekeeper', daemon=True)
        self._housekeeping = weakref.ref(housekeeping)
        self._watchdog = watchdog
        self._wake = threading.Event()
        self._stopped = False
        self._watch_only = False

    def watch_only(self) -> None:
        """From now on, only the watchdog's check: close_all()'s own closes
        and drain are bounded too, with the pool's work stopped."""
        self._watch_only = True
        self._wake.set()

    def wake(self) -> None:
        """Plan again now (the options or the pool changed)."""
        self._wake.set()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    def run(self) -> None:
        while not self._stopped:
            housekeeping = self._housekeeping()
            if housekeeping is None:
                return
            # Cleared before the round: a wake() during it is kept.
            self._wake.clear()
            try:
                now = time.monotonic()
                self._watchdog.check(now, housekeeping.sweeps.overdue)
                interval = min(max(self._watchdog.next_check
                                   - time.monotonic(), MIN_TICK), MAX_TICK)
                if not self._watch_only:
                    interval = min(housekeeping.run_round(now), interval)
            except Exception:
                logger.exception('playhouse_pool housekeeping failed.')
                interval = MAX_TICK
            del housekeeping    # hold no strong reference while asleep
            self._wake.wait(interval)
