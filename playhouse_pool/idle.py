"""The idle connections: a heap ordered by the time each was opened, oldest
first, with a tie-breaker so that two records are never compared. Part of
the ledger (its lock guards it); no I/O.
"""
import heapq
import itertools
from typing import Callable, Iterator, List, Tuple

from .records import PoolConnection

Entry = Tuple[float, int, PoolConnection]


class IdleHeap:
    """Idle connections, the oldest handed out first."""

    def __init__(self) -> None:
        self.entries: List[Entry] = []    # a heap
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self.entries)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __iter__(self) -> Iterator[PoolConnection]:
        return (entry[2] for entry in self.entries)

    def push(self, record: PoolConnection) -> None:
        heapq.heappush(self.entries, (record.opened, next(self._seq),
                                      record))

    def pop_oldest(self) -> PoolConnection:
        return heapq.heappop(self.entries)[2]

    def take_all(self) -> List[PoolConnection]:
        records = [entry[2] for entry in self.entries]
        self.entries = []
        return records

    def pull(self, chosen: Callable[[PoolConnection], bool]
             ) -> List[PoolConnection]:
        """The records for which ``chosen(record)`` holds, out of the heap
        (in heap order)."""
        kept: List[Entry] = []
        pulled: List[Entry] = []
        for entry in self.entries:
            (pulled if chosen(entry[2]) else kept).append(entry)
        if pulled:
            heapq.heapify(kept)
            self.entries = kept
        return [entry[2] for entry in pulled]
