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
  leaks reported, dead threads' connections reclaimed, the minimum refilled,
  and the pool's own I/O past its deadline cut short (:class:`Watchdog`).

Both start lazily, on the first checkout that finds no idle connection
(never at import or construction: apps are imported, then forked), stop in
``close_all()``, and are replaced in a forked child. They hold the pool by a
weak reference: a forgotten pool is collected and its threads end.
"""
import logging
import math
import os
import random
import socket
import threading
import time
import traceback
import weakref
from collections import deque
from typing import Any, Callable, Deque, List, Optional, Set

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
    watchdog = pool._watchdog
    try:
        while True:
            if workers.stopping.is_set() and job.epoch == pool._ledger.epoch:
                # Work of the pool as it is now, queued on workers that
                # were stopped (close_all ran meanwhile): the current ones
                # take it.
                pool._submit([job])
                return
            watchdog.on_behalf(job)
            follow = _STEPS[job.kind](pool, job, workers)
            if not follow:
                return
            job = follow[0]
            pool._submit(follow[1:])
    finally:
        watchdog.on_behalf(None)


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
    # A close sends a goodbye, which a full send buffer to a silent host
    # could block.
    with pool._bounded(job.record.conn):
        pool._close_raw(job.record.conn)
    return pool._ledger.closed(job, time.monotonic())


def _ping(pool: Any, job: Job, workers: Workers) -> Jobs:
    record = job.record
    assert record is not None
    with pool._bounded(record.conn) as watch:
        try:
            alive = bool(pool._ping(record.conn))
        except Exception:
            alive = False
    if watch.cut:
        logger.warning('Connection %x did not answer its ping within %.3gs; '
                       'replacing it.', record.key, watch.seconds)
        alive = False
    elif not alive:
        logger.info('Connection %x failed its ping; replacing it.',
                    record.key)
    return pool._ledger.pinged(job, alive, time.monotonic())


def _reset(pool: Any, job: Job, workers: Workers) -> Jobs:
    # A connection reclaimed from a thread that ended: cleaned as at
    # check-in (within the deadline: the backends' round trips are
    # watched), then back (or replaced).
    assert job.record is not None
    clean = pool._reset(job.record.conn)
    return pool._ledger.pinged(job, clean, time.monotonic())


_STEPS = {Job.OPEN: _open, Job.CLOSE: _close, Job.REPLACE: _close,
          Job.PING: _ping, Job.RESET: _reset}


class Socket:
    """A connection's socket, as seen when the pool's I/O on it began: the
    descriptor and the socket's identity (its inode), so that a descriptor
    the driver closed meanwhile, and the system gave to another socket, is
    never shut down. Taken on the thread that does the I/O: a driver may
    refuse questions from other threads while a call runs (mysqlclient)."""
    __slots__ = ('fd', 'inode')

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.inode = os.fstat(fd).st_ino

    def shut_down(self) -> bool:
        """``shutdown(2)`` it both ways, through a duplicate descriptor
        (closed here; the driver's stays open for its own close): whoever
        blocks reading or writing it wakes with an EOF or an error. False if
        it is not there any more."""
        try:
            if os.fstat(self.fd).st_ino != self.inode:
                return False
            sock = socket.fromfd(self.fd, socket.AF_INET, socket.SOCK_STREAM)
        except OSError:
            return False
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:         # not connected: nothing blocks on it
            pass
        finally:
            sock.close()
        return True


def socket_of(fd: Optional[int]) -> Optional[Socket]:
    """The socket with descriptor ``fd``, or None (none, or not open)."""
    if fd is None or fd < 0:
        return None
    try:
        return Socket(fd)
    except OSError:
        return None


class Watch:
    """One piece of the pool's own I/O under way: a connect (its socket
    attached once the driver returns the connection), a ping, a rollback or
    reset, a close; and when it must have ended. Used as a context manager
    around the I/O: once the block is left, ``cut`` says for good whether
    the watchdog shut the connection's socket down (then the connection is
    not to be trusted, whatever the driver call returned)."""
    __slots__ = ('_watchdog', 'socket', 'seconds', 'deadline', 'job', 'late',
                 'cut')

    def __init__(self, watchdog: 'Watchdog', sock: Optional[Socket],
                 seconds: float, job: Optional[Job]) -> None:
        self._watchdog = watchdog
        self.socket = sock            # None: nothing to cut short
        self.seconds = seconds
        self.deadline = math.inf      # set when armed
        self.job = job                # the worker's job it is part of
        self.late = False             # past its deadline, and handled
        self.cut = False              # its socket was shut down

    def attach(self, sock: Optional[Socket]) -> None:
        """The connect returned its connection, whose socket this is: what
        follows on it (server version, ``configure``) can be cut short."""
        self._watchdog.attach(self, sock)

    def __enter__(self) -> 'Watch':
        return self

    def __exit__(self, *exc: Any) -> None:
        self._watchdog.done(self)


def _nothing() -> None:
    pass


class Watchdog:
    """The pool's own I/O under way, each piece with its deadline (DESIGN.md
    rule 9). The housekeeper checks them when the first deadline comes
    (``check``). One past it has its connection's socket shut down (a
    ``shutdown(2)`` of a duplicate of the descriptor; the driver's own stays
    open for its close): the driver call blocked on it fails at once, and
    its job reports back and frees or reuses its slot. Every driver here
    fails that way (psycopg2, psycopg 3, pymysql, mysqlclient,
    mysql-connector, MariaDB Connector; tests/test_silence.py). It is the
    one bound that works for each: libpq has no read timeout at all, and
    the MySQL drivers' read timeouts are set per connection, the user's to
    choose.

    What has no socket to shut (a connect before the driver returns one, a
    driver that shows none) cannot be cut short: its job is marked overdue
    in the ledger. Waiters stop counting on it and get connects of their
    own where slots are free; its own slot stays held until it ends (the
    connection may exist on the server). Connects are bounded by the
    driver's own timeout, which the pool sets where the user did not
    (opening.py): the watch is the backstop. Each piece past its deadline
    counts in ``pool_stats()['io_timeouts']``.
    """

    def __init__(self) -> None:
        # Reentrant: a signal handler may check out (ping_after=0 watches
        # its ping) on a thread that holds it.
        self._lock = threading.RLock()
        self._watches: Set[Watch] = set()
        # The job the worker on this thread runs: its watches are its.
        self._local = threading.local()
        # When the housekeeper checks next: no deadline is earlier.
        self.next_check = math.inf
        # Wakes the housekeeper (set by the pool when one starts).
        self.wake: Callable[[], None] = _nothing

    def on_behalf(self, job: Optional[Job]) -> None:
        """This worker thread runs ``job`` (None: no job any more)."""
        self._local.job = job

    def watch(self, sock: Optional[Socket], seconds: float) -> Watch:
        """Watch I/O on ``sock`` (None: none to cut, a connect say) that
        must end within ``seconds``; use it as a context manager around the
        I/O."""
        watch = Watch(self, sock, seconds, getattr(self._local, 'job', None))
        with self._lock:
            self._watches.add(watch)
            wake = self._arm(watch)
        if wake:
            self.wake()
        return watch

    def _arm(self, watch: Watch) -> bool:
        # Its deadline from now; True if the housekeeper must wake for it
        # (it planned to check later). With one limit for every piece,
        # deadlines come in order: only the first after a quiet spell
        # wakes it, however busy the pool.
        watch.deadline = time.monotonic() + watch.seconds
        watch.late = False
        if watch.deadline >= self.next_check:
            return False
        self.next_check = watch.deadline
        return True

    def attach(self, watch: Watch, sock: Optional[Socket]) -> None:
        with self._lock:
            watch.socket = sock
            # A connect that came after its deadline: what follows on the
            # connection gets a deadline of its own.
            wake = watch.late and self._arm(watch)
        if wake:
            self.wake()

    def done(self, watch: Watch) -> None:
        with self._lock:
            self._watches.discard(watch)

    def check(self, now: float,
              overdue: Callable[[List[Optional[Job]], int], Jobs]) -> Jobs:
        """Cut short what is past its deadline; tell the ledger
        (``overdue``) of each, and of the jobs that could not be cut short.
        Returns the ledger's jobs."""
        with self._lock:
            if now < self.next_check:
                return []
            late = [w for w in self._watches
                    if not w.late and w.deadline <= now]
            for watch in late:
                watch.late = True
                if watch.socket is not None:
                    watch.cut = watch.socket.shut_down()
            self.next_check = min((w.deadline for w in self._watches
                                   if not w.late), default=math.inf)
            if not late:
                return []
            # Under this lock: none of these has reported back yet.
            return overdue([w.job for w in late if not w.cut], len(late))

    def lateness(self, now: float) -> float:
        """How long past its deadline the latest piece still under way is
        (0.0: none is)."""
        with self._lock:
            return max([now - w.deadline for w in self._watches]
                       + [0.0])


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
            # Cleared before the round: a wake() during it is kept.
            self._wake.clear()
            try:
                interval = housekeep(pool)
            except Exception:
                logger.exception('playhouse_pool housekeeping failed.')
                interval = _MAX_TICK
            del pool       # hold no strong reference while asleep
            self._wake.wait(interval)


def housekeep(pool: Any) -> float:
    """One round; returns seconds until the next."""
    options = pool._pool_options
    ledger = pool._ledger
    watchdog = pool._watchdog
    now = time.monotonic()
    jobs = watchdog.check(now, ledger.overdue)
    jobs += ledger.probe_idle()
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
    due = min(ledger.next_due(options), watchdog.next_check)
    return _interval(options, due - time.monotonic())


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
