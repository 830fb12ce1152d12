"""The ledger's pool-wide operations: what close_idle(), close_stale(),
close_all(), init(), recycle() and the housekeeper take out of the pool, and
how. A mixin of :class:`~playhouse_pool.ledger.Ledger` (same lock, same
rules: no I/O, jobs returned for the workers).
"""
import heapq
import math
import threading
import time
from typing import TYPE_CHECKING, Any, Deque, Dict, List, Optional

from ._options import PoolOptions
from .records import Job, Jobs, Owner, PoolConnection, Waiter


class Sweeps:
    """Operations over many connections at once."""

    if TYPE_CHECKING:
        # The Ledger's state and helpers these build on.
        options: PoolOptions
        lock: Any
        drained: threading.Condition
        idle: List[Any]
        in_use: Dict[int, PoolConnection]
        closed_keys: Dict[int, Owner]
        out: Dict[int, PoolConnection]
        waiters: Deque[Waiter]
        closing: int
        replacing: int
        draining: int
        warming: int
        shrinking: bool
        started: bool
        epoch: int

        def open_count(self) -> int: ...
        def fail_waiters(self, message: str) -> None: ...
        def _fill(self, now: float) -> Jobs: ...
        def _slot_freed(self, now: float) -> Jobs: ...
        def _notify_drained(self) -> None: ...
        def _count_closed(self, count: int) -> None: ...
        def _count_checkin(self, record: PoolConnection,
                           now: float) -> None: ...
        def _send_out(self, record: PoolConnection, kind: str) -> Job: ...
        def _retire(self, record: PoolConnection, now: float) -> Job: ...
        def _last_usable(self, record: PoolConnection, now: float,
                         counted: int) -> bool: ...

    # -- Pool-wide operations ----------------------------------------------

    def start(self) -> Jobs:
        """The workers run: keep the minimum open from now on."""
        with self.lock:
            self.started = True
            return self._fill(time.monotonic())

    def reconfigure(self, options: PoolOptions, discard_idle: bool) -> Jobs:
        """init() changed the options: ages follow the new stale_timeout; a
        lower max_connections closes idle connections over it now and
        checked-out ones as they come back; a higher one serves waiters."""
        with self.lock:
            self.options = options
            for record in ([e[2] for e in self.idle]
                           + list(self.in_use.values())
                           + list(self.out.values())):
                if record.expires != -math.inf:
                    record.set_age_limit(options.stale_timeout)
            excess = self._take_idle_all() if discard_idle else []
            limit = options.max_connections
            over = 0 if limit is None else self.open_count() - limit
            while over > 0 and self.idle:
                excess.append(heapq.heappop(self.idle)[2])
                self.closing += 1
                over -= 1
            self.shrinking = over > 0
            jobs = [Job(Job.CLOSE, r, self.epoch) for r in excess]
            return jobs + self._slot_freed(time.monotonic())

    def detach(self, key: int) -> Optional[PoolConnection]:
        """A checked-out connection its holder closes itself
        (manual_close): its slot is held until ``closed_by_caller``."""
        with self.lock:
            record = self.in_use.pop(key, None)
            if record is None:
                self.closed_keys.pop(key, None)
                return None
            self._count_checkin(record, time.monotonic())
            self.closing += 1
            self._notify_drained()
            return record

    def take_back_older(self, cutoff: float) -> List[PoolConnection]:
        """Connections checked out before ``cutoff``, taken from their
        holders (close_stale); their slots held for the caller's close."""
        with self.lock:
            stale = [r for r in self.in_use.values()
                     if r.checked_out < cutoff]
            self.take_back(stale)
            return stale

    def wait_for_minimum(self, wait: float) -> Optional[int]:
        """Wait up to ``wait`` seconds for min_connections to be open.
        None once they are; else how many are."""
        with self.lock:
            def ready() -> bool:
                return (len(self.idle) + len(self.in_use)
                        >= self.options.min_connections)
            self.warming += 1
            try:
                done = self.drained.wait_for(
                    ready, None if wait >= threading.TIMEOUT_MAX else wait)
            finally:
                self.warming -= 1
            return None if done else len(self.idle) + len(self.in_use)

    def shut_down(self, own_key: Optional[int], caller: Owner,
                  deferred: bool, wait: float,
                  records: List[PoolConnection]) -> None:
        """close_all(): with ``wait``, fail the waiters, refuse checkouts
        and wait that long for checked-out connections to come back; then
        take every connection (into ``records``, as it goes: an interrupted
        drain still closes what it took). Work under way is disowned.

        The caller's own connections (``own_key``, its peewee connection,
        and any checked out by ``caller``) cannot come back while it waits:
        they are not waited for. They are taken now, or, if ``deferred``,
        left with the caller, to be closed as each is checked in."""
        with self.lock:
            own = [r for r in self.in_use.values()
                   if r.key == own_key or (caller is not None
                                           and r.owner is caller)]
            own_keys = {r.key for r in own}
            if deferred:
                # Past any age and doomed: check-in closes each
                # (ledger.checkin), whenever it comes, during the wait too.
                for record in own:
                    record.expires = -math.inf
                    record.doomed = True
            else:
                for record in own:
                    del self.in_use[record.key]
                    if record.key != own_key:    # its holder checks it in
                        self.closed_keys[record.key] = record.owner
                records += own
                self.closing += len(own)
            self.epoch += 1
            self.started = False
            if wait:
                # Checkouts are refused while it drains: the waiters too.
                # (Without a drain they stay in line, and new connections
                # serve them once the old ones are closed, as in peewee.)
                self.fail_waiters('The pool was closed (close_all) while '
                                  'waiting.')
                self.draining += 1
                try:
                    self.drained.wait_for(
                        lambda: self.in_use.keys() <= own_keys,
                        wait if wait < threading.TIMEOUT_MAX else None)
                finally:
                    self.draining -= 1
            records += self._take_idle_all()
            held = [r for r in self.in_use.values() if r.key not in own_keys]
            self.take_back(held)
            records += held

    def take_idle_all(self) -> List[PoolConnection]:
        """Every idle connection, out of the heap, its slot held for the
        caller's close (``closed_by_caller`` frees them)."""
        with self.lock:
            return self._take_idle_all()

    def _take_idle_all(self) -> List[PoolConnection]:
        records = [entry[2] for entry in self.idle]
        self.idle = []
        self.closing += len(records)
        return records

    def take_back(self, held: List[PoolConnection]) -> None:
        """The pool closes these while threads hold them."""
        for record in held:
            del self.in_use[record.key]
            self.closed_keys[record.key] = record.owner
        self.closing += len(held)
        self._notify_drained()

    def closed_by_caller(self, count: int) -> Jobs:
        """The caller closed ``count`` connections whose slots it held."""
        with self.lock:
            self.closing -= count
            self._count_closed(count)
            return self._slot_freed(time.monotonic())

    # -- Housekeeping (the housekeeper calls these, one round at a time) ----

    def probe_idle(self) -> Jobs:
        """Idle connections whose socket has something to say (the server
        closed them, most likely): a worker pings each, then keeps or
        replaces it."""
        with self.lock:
            readable = self._pull_idle(
                lambda r: r.probe is not None and r.probe.readable())
            return [self._send_out(r, Job.PING) for r in readable]

    def retire_expired_idle(self, now: float) -> Jobs:
        """Idle connections past their own age limit: replaced by workers,
        oldest first, never the last one open before stale_timeout."""
        with self.lock:
            jobs: Jobs = []
            expired = sorted((e[2] for e in self.idle if now >= e[2].expires),
                             key=lambda r: r.expires)
            for record in expired:
                if self._last_usable(record, now, 1):
                    break
                self._pull_idle(lambda r, chosen=record: r is chosen)
                jobs.append(self._retire(record, now))
            return jobs

    def evict_idle(self, now: float, idle_timeout: float) -> Jobs:
        """Connections idle longer than ``idle_timeout``, longest idle
        first, down to min_connections: closed by workers."""
        with self.lock:
            # One being replaced counts: its replacement opens in its slot.
            spare = (self.open_count() + self.replacing
                     - self.options.min_connections)
            cutoff = now - idle_timeout
            expired = sorted((e[2] for e in self.idle
                              if e[2].returned < cutoff),
                             key=lambda r: r.returned)[:max(spare, 0)]
            chosen = set(map(id, expired))
            self._pull_idle(lambda r: id(r) in chosen)
            self.closing += len(expired)
            return [Job(Job.CLOSE, r, self.epoch) for r in expired]

    def keepalive_due(self, now: float, ping_after: float) -> Jobs:
        """Idle connections that sat idle for ``ping_after``: out of the
        heap for a worker's ping, then back (or replaced)."""
        with self.lock:
            due = self._pull_idle(lambda r: now - r.returned >= ping_after)
            return [self._send_out(r, Job.PING) for r in due]

    def leaked(self, now: float, leak_timeout: float
               ) -> List[PoolConnection]:
        """Checked out longer than ``leak_timeout`` and not reported yet
        (each checkout is reported once)."""
        with self.lock:
            cutoff = now - leak_timeout
            leaked = [r for r in self.in_use.values()
                      if r.checked_out < cutoff and not r.leak_reported]
            for record in leaked:
                record.leak_reported = True
            return leaked

    def next_due(self, options: PoolOptions) -> float:
        """When the housekeeper has something to do next (monotonic time;
        inf: nothing known yet)."""
        with self.lock:
            times = [math.inf]
            idle = [e[2] for e in self.idle]
            if options.ping_after:
                times += [r.returned + options.ping_after for r in idle]
            if options.stale_timeout is not None:
                times += [r.expires for r in idle]
            if options.idle_timeout is not None:
                times += [r.returned + options.idle_timeout for r in idle]
            if options.leak_timeout is not None:
                times += [r.checked_out + options.leak_timeout
                          for r in self.in_use.values()
                          if not r.leak_reported]
            return min(times)

    def _pull_idle(self, predicate: Any) -> List[PoolConnection]:
        """Idle connections for which ``predicate(record)`` holds, out of
        the heap; the caller accounts for their slots."""
        chosen = [e for e in self.idle if predicate(e[2])]
        if chosen:
            gone = set(map(id, chosen))
            self.idle = [e for e in self.idle if id(e) not in gone]
            heapq.heapify(self.idle)
        return [e[2] for e in chosen]

    def forget(self) -> List[PoolConnection]:
        """Drop every connection without closing any (dispose()): the
        ledger starts empty; connects under way still land in it."""
        with self.lock:
            records = ([e[2] for e in self.idle]
                       + list(self.in_use.values()))
            self.idle = []
            self.in_use = {}
            self.closed_keys = {}
            self._notify_drained()
            return records

    def every_connection(self) -> List[PoolConnection]:
        """Idle, checked out and out for a ping or reset (for a fork)."""
        return ([e[2] for e in self.idle] + list(self.in_use.values())
                + list(self.out.values()))
