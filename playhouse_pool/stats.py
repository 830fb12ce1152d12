"""The pool's counters, kept where each event happens (the ledger calls
them under its lock), and the events they fire for the metrics collectors
(events.py). Counters only grow.
"""
from typing import Any, Dict, Optional

from .events import PoolEvents


class Counters:
    """What ``pool_stats()`` counts, and the events behind it."""

    def __init__(self, events: PoolEvents) -> None:
        self.events = events        # listeners: the metrics collectors
        self.created = self.closed = self.checkouts = 0
        self.timeouts = self.reclaimed = self.recycled = 0
        self.recovered = self.connect_errors = self.io_timeouts = 0
        self.use_seconds = self.connect_seconds = self.wait_seconds = 0.0

    # Each event is cheap when no collector listens: one test of a tuple.

    def checked_out(self) -> None:
        self.checkouts += 1

    def checked_in(self, use: float) -> None:
        self.use_seconds += use
        if self.events.listeners:
            self.events.checkin(use)

    def connected(self, took: float) -> None:
        self.created += 1
        self.connect_seconds += took
        if self.events.listeners:
            self.events.connected(took)

    def connect_failed(self) -> None:
        self.connect_errors += 1
        if self.events.listeners:
            self.events.connect_failed()

    def timed_out(self) -> None:
        self.timeouts += 1
        if self.events.listeners:
            self.events.timeout()

    def closed_some(self, count: int) -> None:
        self.closed += count
        if self.events.listeners:
            self.events.closed(count)

    def snapshot(self, max_connections: Optional[int], idle: int,
                 in_use: int, waiting: int) -> Dict[str, Any]:
        """``pool_stats()``: see PooledDatabase.pool_stats."""
        return {
            'max_connections': max_connections or 0,
            'open': idle + in_use,
            'in_use': in_use,
            'idle': idle,
            'waiting': waiting,
            'created': self.created,
            'closed': self.closed,
            'checkouts': self.checkouts,
            'timeouts': self.timeouts,
            'reclaimed': self.reclaimed,
            'recycled': self.recycled,
            'recovered': self.recovered,
            'use_seconds': self.use_seconds,
            'connect_seconds': self.connect_seconds,
            'connect_errors': self.connect_errors,
            'io_timeouts': self.io_timeouts,
            'wait_seconds': self.wait_seconds,
        }
