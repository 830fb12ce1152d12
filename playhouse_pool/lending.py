"""The thread face of the core: a checkout on the request's thread (the
cheap checks, waiting in line) and the workers that do the pool's I/O.

A checkout takes the oldest idle connection from the ledger and checks it
without a round trip: its local status flags, its age, and one zero-timeout
poll of its socket (rule 3). With none idle, or one that fails, the thread
queues a :class:`~playhouse_pool.waiting.ThreadWaiter` and sleeps until the
ledger hands it a connection, checked in by another thread or new from a
worker, whichever comes first (rule 2). The jobs the ledger dispatches go to
:class:`~playhouse_pool.workers.Workers`, started with the housekeeper on
the first checkout that waits (and again after close_all(), or in a forked
child).
"""
import logging
import math
import os
import threading
import time
import traceback
from typing import Any, Callable, List, Optional, Protocol

import peewee
import playhouse

from ._options import IO_GRACE
from .errors import warm_up_failed
from .events import PoolEvents
from .housekeeping import Housekeeping
from .jobs import Jobs
from .ledger import Ledger
from .opening import Opener
from .records import Owner, PoolConnection
from .sweeps import Sweeps
from .waiting import ThreadWaiter
from .watchdog import Watchdog
from .workers import Housekeeper, Workers

logger = logging.getLogger('playhouse_pool')

# A checkout's ping (ping_after=0) may take this long at least, whatever is
# left of its timeout.
SHORTEST_PING = 0.25


class Checks(Protocol):
    """The database's checks of a connection, as a checkout runs them."""

    def _is_closed(self, conn: Any) -> bool: ...
    def _ping(self, conn: Any) -> bool: ...


class Lender:
    """Lends one pool's connections to threads, and runs its workers."""

    def __init__(self, checks: Checks, ledger: Ledger, sweeps: Sweeps,
                 opener: Opener, events: PoolEvents,
                 watchdog: Watchdog) -> None:
        self.checks = checks
        self.ledger = ledger
        self.sweeps = sweeps
        self.opener = opener
        self.events = events
        self.housekeeping = Housekeeping(ledger, sweeps)
        # Bounds the pool's own I/O: the workers', and a check-in's.
        self.watchdog = watchdog
        self.workers: Optional[Workers] = None
        self.housekeeper: Optional[Housekeeper] = None
        # Reentrant, as the ledger's lock: close_all() may run in a signal
        # handler that interrupted this thread while it held it.
        self.start_lock = threading.RLock()

    # -- Checkout -----------------------------------------------------------

    def checkout(self, owner: Optional[Owner]) -> PoolConnection:
        """A checked connection for ``owner``. Raises MaxConnectionsExceeded
        if none is free in time, the connect error if none could be
        opened."""
        now = time.monotonic()
        ledger = self.ledger
        # Read without the lock: with nothing idle (a busy pool) the queue
        # is next, which takes an idle connection as well if one came back
        # meanwhile; one lock acquisition fewer on the contended path.
        record = ledger.take_idle(owner, now) if ledger.idle.entries \
            else None
        if record is None or not self._usable(record, now, now):
            record = self._checkout_slowly(owner, now, record is not None)
        if self.ledger.options.leak_timeout is not None:
            record.stack = _caller_stack()
        if self.events.listeners:
            self.events.checkout(time.monotonic() - now)
        return record

    def _checkout_slowly(self, owner: Optional[Owner], start: float,
                         counted: bool) -> PoolConnection:
        """No usable idle connection at once: start the workers if they are
        not running, then wait in line, checking each connection handed
        over as it comes. A checkout counts once, however many connections
        it goes through."""
        ledger = self.ledger
        if not (ledger.started and self.housekeeper is not None):
            self.start()
        if not ledger.waiters:
            self.sweeps.reclaim_if_full()
        wait = ledger.options.wait_seconds
        deadline = None if wait is None else start + wait
        while True:
            waiter = ThreadWaiter(owner, start, deadline, counted)
            ledger.queue(waiter, time.monotonic())
            record = self._wait(waiter)
            if self._usable(record, time.monotonic(), start):
                return record
            counted = True

    def _wait(self, waiter: ThreadWaiter) -> PoolConnection:
        """Sleep until handed a connection or failed, or until the deadline
        (rule 9). Without a ``timeout`` (no deadline: it may not wait) the
        thread waits only when a connect was started for it (or something
        else is on its way to it): for as long as one connect attempt may
        take, plus a little."""
        ledger = self.ledger
        deadline = waiter.deadline
        if deadline is None:
            deadline = waiter.since + ledger.options.io_seconds + IO_GRACE
        try:
            woken = waiter.sleep(deadline - time.monotonic())
        except BaseException:              # a signal handler, gevent.Timeout
            abandoned, _ = ledger.give_up(waiter, time.monotonic(), None)
            if not abandoned:              # settled meanwhile: pass it on
                waiter.consume()
                if waiter.record is not None:
                    ledger.checkin(waiter.record.key, True, time.monotonic())
            raise
        if not woken:
            abandoned, error = ledger.give_up(waiter, time.monotonic(),
                                              self.opener.could_not_connect)
            if abandoned:
                assert error is not None
                raise error
            # Settled as the deadline came: its signal is released, under
            # the ledger's lock, so by now.
            waiter.sleep(math.inf)
        error = waiter.error
        if error is not None:
            # No cycle (error -> traceback -> this frame -> waiter -> error):
            # the frames it holds would outlive the exception's handling.
            waiter.error = None
            try:
                raise error
            finally:
                del error
        assert waiter.record is not None
        return waiter.record

    def _usable(self, record: PoolConnection, now: float,
                start: float) -> bool:
        """May this connection, just checked out (by a checkout that began
        at ``start``), be handed to the user? Its local status flags, its
        age, and one zero-timeout poll of its socket (readable: the server
        said something, an error or EOF, on an idle connection): no round
        trip, unless ``ping_after=0`` asks for one. One that fails goes to
        a worker to be replaced (or pinged), and the checkout looks
        again."""
        ledger = self.ledger
        try:
            conn = record.conn
            if self.checks._is_closed(conn):
                logger.debug('Connection %s was closed, replacing it.',
                             record.key)
            elif now >= record.expires and not ledger.keep_expired(record,
                                                                   now):
                logger.debug('Connection %s is past its age, replacing it.',
                             record.key)
            elif ledger.options.ping_after == 0:
                if self._answers(conn, start):
                    return True
                logger.info('Connection %s failed its ping, replacing it.',
                            record.key)
            elif record.probe is not None and record.probe.readable():
                ledger.retire(record, ping=True)
                return False
            else:
                return True
        except BaseException:              # interrupted: give it back
            ledger.checkin(record.key, False, time.monotonic())
            raise
        ledger.retire(record)
        return False

    def _answers(self, conn: Any, start: float) -> bool:
        """``ping_after=0``'s round trip at checkout, cut short at the
        pool's deadline for its own I/O or the checkout's, whichever comes
        first (rule 9); a checkout at its deadline still gets a moment."""
        options = self.ledger.options
        limit = options.io_seconds
        wait = options.wait_seconds
        if wait is not None:
            limit = min(limit, max(start + wait - time.monotonic(),
                                   SHORTEST_PING))
        with self.watchdog.watch(self.opener.socket(conn), limit) as watch:
            alive = self.checks._ping(conn)
        return alive and not watch.cut

    # -- Workers ------------------------------------------------------------

    def start(self) -> None:
        """From the first checkout on (and again after close_all or in a
        forked child): workers, the housekeeper, the minimum opened."""
        # Until both hold: a close_all() in a signal handler that lands in
        # here stops what this started, and it starts again.
        while not (self.ledger.started and self.housekeeper is not None):
            self._start_once()

    def _start_once(self) -> None:
        with self.start_lock:
            if self.housekeeper is None:
                # Recorded once running: a KeyboardInterrupt in start()
                # leaves none, and the next checkout starts one.
                housekeeper = Housekeeper(self.housekeeping, self.watchdog)
                self.watchdog.wake = housekeeper.wake
                try:
                    housekeeper.start()
                except BaseException:   # it may be running: not twice
                    housekeeper.stop()
                    raise
                self.housekeeper = housekeeper
            self.sweeps.start()

    def submit(self, jobs: Jobs) -> None:
        """The ledger's dispatch: jobs to the workers (started if none)."""
        if jobs:
            workers = self.workers
            if workers is None:
                with self.start_lock:
                    workers = self.workers
                    if workers is None:
                        # One read: a close_all() in a signal handler may
                        # set the attribute to None right after.
                        workers = self.workers = Workers(
                            self.opener, self.submit, self.watchdog)
            workers.submit(jobs)

    def stop(self, keep_watch: bool = False) -> Optional[Housekeeper]:
        """Stop the workers and the housekeeper; with ``keep_watch``, the
        housekeeper goes on with only the watchdog's check, and is returned
        for the caller to stop once its own I/O is done (close_all)."""
        with self.start_lock:
            workers, self.workers = self.workers, None
            housekeeper, self.housekeeper = self.housekeeper, None
        if workers is not None:
            workers.stop()
        if housekeeper is None:
            return None
        if keep_watch:
            housekeeper.watch_only()
            return housekeeper
        housekeeper.stop()
        return None

    def wake_housekeeper(self) -> None:
        if self.housekeeper is not None:
            self.housekeeper.wake()

    def warm_up(self, timeout: Optional[float]) -> None:
        """See PooledDatabase.warm_up."""
        self.start()
        if self.wait_until(self.sweeps.has_minimum,
                           math.inf if timeout is None else timeout):
            return
        raise warm_up_failed(self.sweeps.opened_count(),
                             self.ledger.options.min_connections,
                             self.opener.name(), timeout, self.ledger.failing)

    def wait_until(self, ready: Callable[[], bool], seconds: float) -> bool:
        """Block until ``ready()`` (evaluated under the ledger's lock) or
        ``seconds`` pass; True if it became ready. (close_all's drain,
        warm_up.)"""
        ledger = self.ledger
        with ledger.lock:
            changed = threading.Condition(ledger.lock)
            ledger.watchers.append(changed.notify_all)
            try:
                return changed.wait_for(
                    ready, None if seconds >= threading.TIMEOUT_MAX
                    else seconds)
            finally:
                ledger.watchers.remove(changed.notify_all)


# Frames that are not the application's: this package's, peewee's and the
# playhouse extensions' (connection_context(), the decorators' wrappers).
_NOT_THE_APPLICATIONS = tuple(
    os.path.dirname(os.path.abspath(path)) + os.sep
    for path in (__file__, playhouse.__file__))
_PEEWEE_MODULE = os.path.abspath(peewee.__file__)


def _caller_stack() -> List[traceback.FrameSummary]:
    """Where the application checked the connection out: its own frames,
    innermost last (this package's, peewee's and playhouse's left out)."""
    frames = [f for f in traceback.extract_stack(limit=32)
              if not f.filename.startswith(_NOT_THE_APPLICATIONS)
              and f.filename != _PEEWEE_MODULE]
    return frames[-12:]
