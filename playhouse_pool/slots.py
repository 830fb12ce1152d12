"""The slots that work under way holds: connects, closes, replacements, and
connections out of the pool for a ping or a reset. Part of the ledger (its
lock guards it); no I/O.

A slot is held from the moment the ledger decides on the work until the
work publishes its result, so that open connections, idle and checked out,
plus these never exceed ``max_connections`` (rule 7).
"""
import math
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from .records import PoolConnection

if TYPE_CHECKING:
    from .jobs import Job, OpenConnection


class Slots:
    """Reserved slots, and the limit they count against."""

    def __init__(self, limit: Optional[int]) -> None:
        self.limit = limit                    # max_connections (None: none)
        self.opening: List['OpenConnection'] = []   # connects under way
        self.out: Dict[Any, PoolConnection] = {}    # out for a ping or reset
        self.closing = 0      # slots held by a close under way
        self.replacing = 0    # of which a replacement opens next
        # Of the work above, what ran past its deadline with nothing to cut
        # it short (watchdog.py): not counted on, its slot still held.
        self.overdue = 0
        # init() lowered max_connections below what is open: check-ins
        # close connections (and freed slots go unused) until it holds.
        self.shrinking = False

    @property
    def live(self) -> int:
        """Connections being opened, or out for a ping or reset."""
        return len(self.opening) + len(self.out)

    @property
    def reserved(self) -> int:
        """Every slot held by work under way."""
        return self.live + self.closing

    @property
    def coming(self) -> int:
        """Connections on their way to the waiters: connects (replacements
        included) and connections out for a ping or reset, less those
        overdue (a connect that may never end is not on its way)."""
        return (len(self.opening) + self.replacing + len(self.out)
                - self.overdue)

    def over_a_lowered_maximum(self, would_be_open: int) -> bool:
        """init() lowered max_connections below what is open: True while
        ``would_be_open`` connections would exceed it (those being closed
        are on their way out); the shrink ends once it holds."""
        if not self.shrinking:
            return False
        if self.limit is not None and would_be_open > self.limit:
            return True
        self.shrinking = False
        return False

    def settle(self, job: 'Job') -> None:
        """A job reports back: if it was overdue, it is counted on
        again."""
        if job.overdue:
            job.overdue = False
            self.overdue -= 1

    def free(self, held: int) -> float:
        """Slots free beside ``held`` connections (idle and checked out)."""
        if self.limit is None:
            return math.inf
        return self.limit - held - self.reserved
