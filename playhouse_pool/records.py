"""What the ledger keeps: a pooled connection's record, a job for the
workers, a waiting thread. Plain data with no locking of their own: the
ledger's lock guards them (a waiter's signal aside).
"""
import math
import random
import threading
import time
import traceback
from typing import Any, List, Optional, Tuple

# Each connection's own age limit is stale_timeout less up to this fraction,
# drawn at random: a cohort opened together does not expire together.
AGE_JITTER = 0.05

Owner = Optional[threading.Thread]


class PoolConnection:
    """One connection's life in the pool."""
    __slots__ = ('conn', 'key', 'opened', 'lifetime', 'expires', 'returned',
                 'checked_out', 'owner', 'probe', 'stack', 'leak_reported',
                 'fresh', 'doomed')

    def __init__(self, conn: Any, key: Any, probe: Any,
                 stale: Optional[float], now: float) -> None:
        self.conn = conn
        self.key = key            # the database's conn_key(conn)
        self.opened = now         # heap order
        # stale_timeout less this connection's own jitter (a fraction).
        self.lifetime = 1.0 - random.uniform(0.0, AGE_JITTER)
        self.expires = math.inf   # set by set_age_limit()
        self.set_age_limit(stale)
        self.returned = now       # last check-in or ping: keepalive, idle
        self.checked_out = now
        self.owner: Owner = None
        self.probe = probe        # readability of its socket, or None
        # Where the application checked it out: only with leak_timeout.
        self.stack: Optional[List[traceback.FrameSummary]] = None
        self.leak_reported = False
        # Handed straight from its connect to a checkout: it has just proven
        # itself, so its first statement is not watched (recovery.py).
        self.fresh = True
        # close_all() left it with the thread using it: closed (not
        # replaced) when it comes back.
        self.doomed = False

    # peewee's names (its PoolConnection tuple), for code that reads them.
    @property
    def connection(self) -> Any:
        return self.conn

    @property
    def timestamp(self) -> float:
        """When it was opened, as peewee gives it: ``time.time()``."""
        return wall_clock(self.opened)

    def set_age_limit(self, stale: Optional[float]) -> None:
        self.expires = (math.inf if stale is None
                        else self.opened + stale * self.lifetime)


class Job:
    """I/O for a worker: open a connection, close one, close one and open
    its replacement in the same slot, ping an idle one, or reset one that
    a dead thread left behind. Its slot is reserved until it reports back.

    ``deadline`` (OPEN jobs): None, one attempt; a time, retry until then;
    inf, retry until it succeeds or the pool is closed. ``overdue``: its
    I/O ran past the pool's deadline for it and nothing could cut it short
    (workers.Watchdog): waiters no longer count on it, though its slot stays
    held until it reports back.
    """
    OPEN, CLOSE, REPLACE, PING, RESET = 'open', 'close', 'replace', 'ping', \
        'reset'
    __slots__ = ('kind', 'record', 'deadline', 'epoch', 'attempts',
                 'started', 'overdue')

    def __init__(self, kind: str, record: Optional[PoolConnection],
                 epoch: int, deadline: Optional[float] = math.inf) -> None:
        self.kind = kind
        self.record = record
        self.epoch = epoch
        self.deadline = deadline
        self.attempts = 0
        self.started = time.monotonic()
        self.overdue = False


class Waiter:
    """A thread waiting for a connection. ``hand`` (a connection) or
    ``fail`` is called on it exactly once, by whoever removed it from the
    queue under the ledger's lock."""
    __slots__ = ('_signal', 'record', 'error', 'owner', 'since', 'deadline',
                 'jobs', 'reclaimed', 'counted')

    def __init__(self, owner: Owner, since: float,
                 deadline: Optional[float]) -> None:
        self._signal = threading.Lock()
        self._signal.acquire()
        self.record: Optional[PoolConnection] = None
        self.error: Optional[BaseException] = None
        self.owner = owner        # who holds what it is handed (None: shared)
        self.since = since        # the checkout's start
        self.deadline = deadline  # None: until served or failed
        # Set by the ledger when it queues the waiter, for the caller: a
        # connect to start, dead threads' connections to log.
        self.jobs: List['Job'] = []
        self.reclaimed: List[Tuple[int, str]] = []
        self.counted = False      # in pool_stats()['checkouts'] already

    def wait(self, timeout: float) -> bool:
        if timeout >= threading.TIMEOUT_MAX:       # inf, or beyond the OS
            return self._signal.acquire()
        return self._signal.acquire(timeout=max(timeout, 0.0))

    def hand(self, record: PoolConnection) -> None:
        self.record = record
        self._signal.release()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self._signal.release()

    def consume(self) -> None:
        self._signal.acquire(False)


Jobs = List[Job]


def wall_clock(monotonic: float) -> float:
    """A ``time.monotonic()`` instant as ``time.time()`` would give it."""
    return time.time() - (time.monotonic() - monotonic)


def thread_name(record: PoolConnection) -> str:
    return record.owner.name if record.owner is not None else '?'


def call_site(record: PoolConnection) -> Optional[str]:
    """``file:line in function`` of the application's checkout of this
    connection (recorded with leak_timeout only), or None."""
    if not record.stack:
        return None
    frame = record.stack[-1]
    return '%s:%s in %s' % (frame.filename, frame.lineno, frame.name)
