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
from peewee import OperationalError

from .errors import pool_exhausted
from .events import PoolEvents
from .housekeeping import Housekeeping
from .jobs import Jobs
from .ledger import Ledger
from .opening import Opener
from .records import Owner, PoolConnection
from .sweeps import Sweeps
from .waiting import ThreadWaiter
from .workers import Housekeeper, Workers

logger = logging.getLogger('playhouse_pool')


class Checks(Protocol):
    """The database's checks of a connection, as a checkout runs them."""

    def _is_closed(self, conn: Any) -> bool: ...
    def _ping(self, conn: Any) -> bool: ...


class Lender:
    """Lends one pool's connections to threads, and runs its workers."""

    def __init__(self, checks: Checks, ledger: Ledger, sweeps: Sweeps,
                 opener: Opener, events: PoolEvents) -> None:
        self.checks = checks
        self.ledger = ledger
        self.sweeps = sweeps
        self.opener = opener
        self.events = events
        self.housekeeping = Housekeeping(ledger, sweeps)
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
        record = self.ledger.take_idle(owner, now)
        if record is None or not self._usable(record, now):
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
        self.start()
        self.sweeps.reclaim_if_full()
        wait = self.ledger.options.wait_seconds
        deadline = None if wait is None else start + wait
        while True:
            waiter = ThreadWaiter(owner, start, deadline, counted)
            self.ledger.queue(waiter, time.monotonic())
            record = self._wait(waiter)
            if self._usable(record, time.monotonic()):
                return record
            counted = True

    def _wait(self, waiter: ThreadWaiter) -> PoolConnection:
        """Sleep until handed a connection or failed."""
        ledger = self.ledger
        timeout = (math.inf if waiter.deadline is None
                   else waiter.deadline - time.monotonic())
        try:
            woken = waiter.sleep(timeout)
        except BaseException:              # a signal handler, gevent.Timeout
            abandoned, _, _ = ledger.give_up(waiter, time.monotonic(), False)
            if not abandoned:              # settled meanwhile: pass it on
                waiter.consume()
                if waiter.record is not None:
                    ledger.checkin(waiter.record.key, True, time.monotonic())
            raise
        if not woken:
            now = time.monotonic()
            abandoned, failing, dry = ledger.give_up(waiter, now, True)
            if abandoned:
                if failing is not None:
                    raise self.opener.could_not_connect(failing)
                assert dry is not None
                raise pool_exhausted(
                    'timed out: no connection came free within timeout=%ss'
                    % ledger.options.timeout, now - waiter.since, dry)
            # Settled as the deadline came, or waiting on for a connect
            # under way.
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

    def _usable(self, record: PoolConnection, now: float) -> bool:
        """May this connection, just checked out, be handed to the user?
        Its local status flags, its age, and one zero-timeout poll of its
        socket (readable: the server said something, an error or EOF, on
        an idle connection): no round trip, unless ``ping_after=0`` asks
        for one. One that fails goes to a worker to be replaced (or
        pinged), and the checkout looks again."""
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
                if self.checks._ping(conn):
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
                housekeeper = Housekeeper(self.housekeeping)
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
                        workers = self.workers = Workers(self.opener,
                                                         self.submit)
            workers.submit(jobs)

    def stop(self) -> None:
        with self.start_lock:
            workers, self.workers = self.workers, None
            housekeeper, self.housekeeper = self.housekeeper, None
        if workers is not None:
            workers.stop()
        if housekeeper is not None:
            housekeeper.stop()

    def wake_housekeeper(self) -> None:
        if self.housekeeper is not None:
            self.housekeeper.wake()

    def warm_up(self, timeout: Optional[float]) -> None:
        """See PooledDatabase.warm_up."""
        self.start()
        if self.wait_until(self.sweeps.has_minimum,
                           math.inf if timeout is None else timeout):
            return
        failing = self.ledger.failing
        error = OperationalError(
            'playhouse_pool opened %d of min_connections=%d to %s within '
            '%ss%s' % (self.sweeps.opened_count(),
                       self.ledger.options.min_connections,
                       self.opener.name(), timeout,
                       ': ' + self.opener.describe(failing) if failing
                       else ''))
        raise error from failing

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
