"""What the housekeeper does in one round, and when the next is due: idle
connections past ``ping_after`` pinged, past their age replaced, past
``idle_timeout`` closed, dead ones found by their socket, leaks reported,
dead threads' connections reclaimed, the minimum refilled (docs/design.rst,
rules 3, 5 and 8).

The selections run on the ledger under its lock (no I/O) and dispatch their
jobs to the workers. Who runs the rounds is the face's business: a thread
(workers.py), or a task on the event loop.
"""
import logging
import math
import traceback
from typing import Callable, List

from .jobs import Jobs, PingConnection
from .ledger import Ledger
from .records import PoolConnection
from .sweeps import Sweeps

logger = logging.getLogger('playhouse_pool')

# Rounds come at least this often, and never more often than MIN_TICK.
MAX_TICK = 60.0
MIN_TICK = 0.01


class Housekeeping:
    """The housekeeper's rounds over one pool's ledger."""

    def __init__(self, ledger: Ledger, sweeps: Sweeps) -> None:
        self.ledger = ledger
        self.sweeps = sweeps

    def run_round(self, now: float) -> float:
        """One round; returns seconds until the next is due."""
        options = self.ledger.options
        self.probe_idle()
        if options.stale_timeout is not None:
            self.retire_expired_idle(now)
        if options.idle_timeout is not None:
            self.evict_idle(now, options.idle_timeout)
        if options.ping_after:
            self.keepalive_due(now, options.ping_after)
        if options.leak_timeout is not None:
            _report_leaks(self.leaked(now, options.leak_timeout),
                          options.leak_timeout)
        self.sweeps.reclaim()
        self.sweeps.fill()
        return self.interval(self.next_due() - now)

    def interval(self, until_due: float) -> float:
        """Whatever is due, checked at least every half of the shortest
        interval the options set (a connection checked in after this round
        is due no earlier than that)."""
        options = self.ledger.options
        given = [t for t in (options.ping_after, options.stale_timeout,
                             options.idle_timeout, options.leak_timeout) if t]
        cap = min([MAX_TICK] + [t / 2 for t in given])
        return max(MIN_TICK, min(cap, until_due))

    # -- Selections -----------------------------------------------------------

    def probe_idle(self) -> None:
        """Idle connections whose socket has something to say (the server
        closed them, most likely): a worker pings each, then keeps or
        replaces it. The polls run outside the lock (rule 1); one that
        was checked out meanwhile stays with its holder."""
        ledger = self.ledger
        with ledger.lock:
            probes = [(r, r.probe) for r in ledger.idle
                      if r.probe is not None]
        readable = {id(r) for r, probe in probes if probe.readable()}
        if readable:
            self._send_idle_out(lambda r: id(r) in readable)

    def keepalive_due(self, now: float, ping_after: float) -> None:
        """Idle connections that sat idle for ``ping_after``: out of the
        heap for a worker's ping, then back (or replaced)."""
        self._send_idle_out(lambda r: now - r.returned >= ping_after)

    def _send_idle_out(self, chosen: Callable[[PoolConnection], bool]
                       ) -> None:
        ledger = self.ledger
        with ledger.lock:
            jobs: Jobs = [ledger.send_out(r, PingConnection)
                          for r in ledger.idle.pull(chosen)]
        ledger.dispatch(jobs)

    def retire_expired_idle(self, now: float) -> None:
        """Idle connections past their own age limit: replaced by workers,
        oldest first, never the last one open before stale_timeout."""
        ledger = self.ledger
        with ledger.lock:
            expired = sorted((r for r in ledger.idle if now >= r.expires),
                             key=lambda r: r.expires)
            retiring: List[PoolConnection] = []
            for record in expired:
                # (Those chosen so far are still in the heap: counted.)
                if ledger.last_usable(record, now, 1 + len(retiring)):
                    break
                retiring.append(record)
            chosen = set(map(id, retiring))
            ledger.idle.pull(lambda r: id(r) in chosen)
            jobs: Jobs = [ledger.retire_taken(r) for r in retiring]
        ledger.dispatch(jobs)

    def evict_idle(self, now: float, idle_timeout: float) -> None:
        """Connections idle longer than ``idle_timeout``, longest idle
        first, down to min_connections: closed by workers."""
        ledger = self.ledger
        with ledger.lock:
            # One being replaced counts: its replacement opens in its slot.
            spare = (ledger.open_count() + ledger.slots.replacing
                     - ledger.options.min_connections)
            cutoff = now - idle_timeout
            expired = sorted((r for r in ledger.idle if r.returned < cutoff),
                             key=lambda r: r.returned)[:max(spare, 0)]
            chosen = set(map(id, expired))
            ledger.idle.pull(lambda r: id(r) in chosen)
            jobs: Jobs = [ledger.close_taken(r) for r in expired]
        ledger.dispatch(jobs)

    def leaked(self, now: float, leak_timeout: float
               ) -> List[PoolConnection]:
        """Checked out longer than ``leak_timeout`` and not reported yet
        (each checkout is reported once)."""
        ledger = self.ledger
        with ledger.lock:
            cutoff = now - leak_timeout
            leaked = [r for r in ledger.in_use.values()
                      if r.checked_out < cutoff and not r.leak_reported]
            for record in leaked:
                record.leak_reported = True
            return leaked

    def next_due(self) -> float:
        """When something is due next (monotonic time; inf: nothing known
        yet)."""
        ledger = self.ledger
        with ledger.lock:
            options = ledger.options
            times = [math.inf]
            idle = list(ledger.idle)
            if options.ping_after:
                times += [r.returned + options.ping_after for r in idle]
            if options.stale_timeout is not None:
                times += [r.expires for r in idle]
            if options.idle_timeout is not None:
                times += [r.returned + options.idle_timeout for r in idle]
            if options.leak_timeout is not None:
                times += [r.checked_out + options.leak_timeout
                          for r in ledger.in_use.values()
                          if not r.leak_reported]
            return min(times)


def _report_leaks(leaked: List[PoolConnection], leak_timeout: float) -> None:
    for record in leaked:
        logger.warning(
            'Connection %s has been checked out by %s %r for over '
            '%.3gs (leak_timeout); checked out at:\n%s', record.key,
            record.holder_kind, record.holder, leak_timeout,
            ''.join(traceback.format_list(record.stack or []))
            or '(stack not recorded)\n')
