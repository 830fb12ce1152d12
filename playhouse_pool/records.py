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


class Owner(Protocol):
    """Who holds a checked-out connection: a thread, or (the asyncio face)
    a task seen through the same two members."""

    @property
    def name(self) -> str: ...

    def is_alive(self) -> bool: ...


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
        self.expires = (math.inf if stale is None
                        else self.opened + stale * self.lifetime)

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
