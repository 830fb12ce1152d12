"""Background work: a connection's birth, check-up and death, off the
request path (docs/design.rst, rule 8).

Each job is one piece of I/O on one connection, run by a pool worker
outside every lock, then published to the ledger, which may answer with
more work (a replacement to open after a close, a connect to retry). The
ledger creates the jobs and keeps each one's slot reserved until its result
is published, so the slot count stays exact (rule 7).

A job does its I/O through :class:`ConnectionIO`, the narrow side of the
pool it may use: open, close, ping or reset one connection, and name things
without secrets. ``call(io)`` is the I/O; ``report(...)`` publishes what
came of it. The thread face's workers run both in a thread (workers.py);
the asyncio face awaits ``call()`` with an I/O side whose methods are
coroutines, and reports the same way: the rules live in one place.
"""
import logging
import random
from typing import Any, Callable, List, Optional, Protocol

from ._options import PoolOptions
from .records import PoolConnection

logger = logging.getLogger('playhouse_pool')

# Connect retries: capped exponential backoff, jittered.
BACKOFF_FIRST = 0.05
BACKOFF_CAP = 2.0
# The last retry is made this much (at most) before the deadline, so that
# its verdict reaches the waiters by then; never more than 5% of timeout.
FINAL_MARGIN = 0.1

# Connect errors worth another attempt inside the deadline: the server is
# down, restarting or out of slots. Anything else (bad keyword, missing
# driver, bad credentials as ProgrammingError) surfaces at once. Told by the
# DB-API class names, as peewee maps driver errors: peewee 3.17 passes
# psycopg 3's own errors through unconverted.
_RETRYABLE_NAMES = frozenset(('OperationalError', 'InterfaceError'))


def retryable(exc: BaseException) -> bool:
    return isinstance(exc, OSError) or any(
        cls.__name__ in _RETRYABLE_NAMES for cls in type(exc).__mro__)


class Naming(Protocol):
    """Names without secrets, for what a job logs and raises: all that
    ``report`` sees of the I/O side (whose I/O may be coroutines)."""

    def name(self) -> str:
        """The database's name, fit for a log line."""

    def describe(self, error: BaseException) -> str:
        """``error`` fit for a log line."""

    def could_not_connect(self, cause: BaseException) -> BaseException:
        """The error for a waiter whose timeout ran out while connects
        failed (``cause`` chained)."""


class ConnectionIO(Naming, Protocol):
    """What a job may ask of the pool: I/O on one connection (blocking:
    the thread face's), and names without secrets."""

    def open(self) -> PoolConnection:
        """A new connection, set up and wrapped; raises the driver's
        error."""

    def close(self, record: PoolConnection) -> None:
        """Close it; never raises."""

    def ping(self, record: PoolConnection) -> bool:
        """A full round trip: True if the server answered."""

    def reset(self, record: PoolConnection) -> bool:
        """Clean it for reuse, as at check-in: False if it cannot be."""


class Books(Protocol):
    """The ledger, as a job sees it: where it publishes what came of its
    I/O (each method returns the follow-up jobs, or whether to retry)."""
    epoch: int
    options: PoolOptions

    def opened(self, job: 'OpenConnection', record: PoolConnection,
               now: float, took: float) -> 'Jobs': ...

    def open_failed(self, job: 'OpenConnection', error: BaseException,
                    retryable: bool, now: float, margin: float,
                    could_not_connect: Callable[[BaseException],
                                                BaseException]) -> bool: ...

    def open_cancelled(self, job: 'OpenConnection', now: float
                       ) -> 'Jobs': ...

    def closed(self, job: 'CloseConnection', now: float) -> 'Jobs': ...

    def checked(self, job: 'Job', usable: bool, now: float) -> 'Jobs': ...


class Job:
    """One piece of background I/O; see the module docstring."""
    __slots__ = ('ledger', 'epoch', 'record', 'delay', 'overdue')
    kind = 'job'

    def __init__(self, ledger: Books, record: Optional[PoolConnection]
                 = None) -> None:
        self.ledger = ledger
        # close_all() and fork move the ledger's epoch on: a job of an
        # older epoch belongs to a pool that is gone.
        self.epoch = ledger.epoch
        self.record = record
        self.delay = 0.0          # seconds to wait before running (retries)
        # Its I/O ran past the pool's deadline and nothing could cut it
        # short (watchdog.py): waiters no longer count on it, though its
        # slot stays held until it reports back.
        self.overdue = False

    @property
    def current(self) -> bool:
        """Still work of the pool as it is (no close_all since)?"""
        return self.epoch == self.ledger.epoch

    def call(self, io: Any) -> Any:
        """The I/O (a coroutine, with the asyncio face's I/O side)."""
        raise NotImplementedError

    def report(self, io: Naming, result: Any,
               error: Optional[Exception], began: float,
               now: float) -> 'Jobs':
        """Publish the outcome of ``call`` (its ``result``, or the
        ``error`` it raised); returns follow-up jobs."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return '<%s %x>' % (self.kind, id(self))


Jobs = List[Job]


class OpenConnection(Job):
    """Open a connection for the pool: for a waiter, growth, a replacement
    or the minimum. Retried with capped, jittered backoff until
    ``deadline`` (None: one attempt; inf: until it succeeds or the pool is
    closed); its waiters hear of failures as the ledger decides."""
    __slots__ = ('deadline', 'attempts', 'started')
    kind = 'open'

    def __init__(self, ledger: Books, deadline: Optional[float],
                 now: float) -> None:
        super().__init__(ledger)
        self.deadline = deadline
        self.attempts = 0
        self.started = now

    def call(self, io: Any) -> Any:
        self.attempts += 1
        return io.open()

    def report(self, io: Naming, result: Any,
               error: Optional[Exception], began: float,
               now: float) -> Jobs:
        if error is None:
            logger.debug('Opened connection %s.', result.key)
            return self.ledger.opened(self, result, now, now - began)
        error.__traceback__ = None        # kept by the ledger: no frames
        margin = min(FINAL_MARGIN,
                     0.05 * (self.ledger.options.timeout or 0.0))
        again = self.ledger.open_failed(self, error, retryable(error), now,
                                        margin, io.could_not_connect)
        if not again:
            logger.warning('Connect attempt %d to %s failed (%s); giving '
                           'up.', self.attempts, io.name(),
                           io.describe(error))
            return []
        delay = min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** (self.attempts - 1))
        delay *= random.uniform(0.5, 1.0)
        # The last attempt is made at the deadline (less the margin).
        assert self.deadline is not None          # else: no retry
        self.delay = max(min(delay, self.deadline - margin - now), 0.0)
        logger.warning('Connect attempt %d to %s failed (%s); retrying in '
                       '%.2fs.', self.attempts, io.name(), io.describe(error),
                       self.delay)
        return [self]


class CloseConnection(Job):
    """Close a connection the pool took out of service; its slot is freed
    when it is closed."""
    __slots__ = ()
    kind = 'close'
    replace = False

    def call(self, io: Any) -> Any:
        assert self.record is not None
        return io.close(self.record)

    def report(self, io: Naming, result: Any,
               error: Optional[Exception], began: float,
               now: float) -> Jobs:
        return self.ledger.closed(self, now)


class ReplaceConnection(CloseConnection):
    """Close a connection (dead, past its age, recycled) and open its
    replacement in the same slot."""
    __slots__ = ()
    kind = 'replace'
    replace = True


class PingConnection(Job):
    """A round trip on a connection out of the idle heap (keepalive, or its
    socket had something to say): back to the pool if it answers, else
    replaced."""
    __slots__ = ()
    kind = 'ping'

    def call(self, io: Any) -> Any:
        assert self.record is not None
        return io.ping(self.record)

    def report(self, io: Naming, result: Any,
               error: Optional[Exception], began: float,
               now: float) -> Jobs:
        assert self.record is not None
        alive = error is None and bool(result)
        if not alive:
            logger.info('Connection %s failed its ping; replacing it.',
                        self.record.key)
        return self.ledger.checked(self, alive, now)


class ResetConnection(Job):
    """Clean a connection reclaimed from a thread that ended holding it,
    as its check-in would have: back to the pool, or replaced."""
    __slots__ = ()
    kind = 'reset'

    def call(self, io: Any) -> Any:
        assert self.record is not None
        return io.reset(self.record)

    def report(self, io: Naming, result: Any,
               error: Optional[Exception], began: float,
               now: float) -> Jobs:
        return self.ledger.checked(self, error is None and bool(result), now)
