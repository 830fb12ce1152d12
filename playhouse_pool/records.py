"""A pooled connection's record: what the bookkeeping knows of one
connection, from its connect to its close. Plain data: the ledger's lock
guards it.
"""
import math
import random
import time
import traceback
from typing import Any, List, Optional, Protocol

# Each connection's own age limit is stale_timeout less up to this fraction,
# drawn at random: a cohort opened together does not expire together.
AGE_JITTER = 0.05
# ... or less up to this many times its own connect, where that is more (up
# to MAX_JITTER of stale_timeout): a cohort whose window of expiry is
# shorter than a connect would leave the pool with nothing open while the
# replacements connect (a stale_timeout of 1 s, 100 ms connects); spread
# over a few connects, the first replacements arrive while the last of the
# cohort still serve.
CONNECT_JITTER = 3.0
MAX_JITTER = 0.5


class Owner(Protocol):
    """Who holds a checked-out connection: a thread, or (the asyncio face)
    a task seen through the same two members."""

    @property
    def name(self) -> str: ...

    def is_alive(self) -> bool: ...


def owner_kind(owner: Optional[Owner]) -> str:
    """What an owner is called in messages: 'thread' (a ``threading.Thread``,
    or none: shared by threads), or its own ``kind`` ('task')."""
    return getattr(owner, 'kind', 'thread')


class PoolConnection:
    """One connection's life in the pool."""
    __slots__ = ('conn', 'key', 'opened', 'draw', 'connect_seconds',
                 'expires', 'returned', 'checked_out', 'owner', 'probe',
                 'stack', 'leak_reported', 'fresh', 'doomed')

    def __init__(self, conn: Any, key: Any, probe: Any,
                 stale: Optional[float], now: float) -> None:
        self.conn = conn
        self.key = key            # the database's conn_key(conn)
        self.opened = now         # heap order
        # This connection's own share of the jitter (set_age_limit), and
        # how long its connect took (the ledger sets it when it lands).
        self.draw = random.random()
        self.connect_seconds = 0.0
        self.expires = math.inf   # set by set_age_limit()
        self.set_age_limit(stale)
        self.returned = now       # last check-in or ping: keepalive, idle
        self.checked_out = now
        self.owner: Optional[Owner] = None   # None: shared by threads
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
        if stale is None:
            self.expires = math.inf
            return
        span = min(max(AGE_JITTER, CONNECT_JITTER * self.connect_seconds
                       / stale), MAX_JITTER)
        self.expires = self.opened + stale * (1.0 - self.draw * span)

    def recycle(self) -> None:
        """Past any age from now on: replaced as soon as it is free."""
        self.expires = -math.inf

    @property
    def recycled(self) -> bool:
        return self.expires == -math.inf

    @property
    def holder(self) -> str:
        """The name of the thread (or task) holding it, '?' if shared."""
        return self.owner.name if self.owner is not None else '?'

    @property
    def holder_kind(self) -> str:
        """'thread', or 'task' for the asyncio face's owners."""
        return owner_kind(self.owner)

    @property
    def call_site(self) -> Optional[str]:
        """``file:line in function`` of the application's checkout of this
        connection (recorded with leak_timeout only), or None."""
        if not self.stack:
            return None
        frame = self.stack[-1]
        return '%s:%s in %s' % (frame.filename, frame.lineno, frame.name)


def wall_clock(monotonic: float) -> float:
    """A ``time.monotonic()`` instant as ``time.time()`` would give it."""
    return time.time() - (time.monotonic() - monotonic)
