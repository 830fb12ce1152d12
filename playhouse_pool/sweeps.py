"""Operations over the whole pool at once, on a ledger: what close_idle(),
close_stale(), close_all(), manual_close(), init(), recycle() and the
housekeeper take out of the pool, and how. Same lock, same rules as the
ledger (no I/O; jobs dispatched once the lock is released), through its
public parts and primitives.
"""
import logging
import time
from typing import Any, List, Optional, Set, Tuple

from ._options import PoolOptions
from .errors import PoolClosedError
from .jobs import Job, Jobs, ResetConnection
from .ledger import Ledger
from .records import Owner, PoolConnection

logger = logging.getLogger('playhouse_pool')


class Sweeps:
    """Pool-wide operations on ``ledger``."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    # -- The pool's life ------------------------------------------------------

    def start(self) -> None:
        """The workers run: keep the minimum open from now on."""
        ledger = self.ledger
        with ledger.lock:
            ledger.started = True
            jobs = ledger.fill_up()
        ledger.dispatch(jobs)

    def reconfigure(self, options: PoolOptions, discard_idle: bool) -> None:
        """init() changed the options: ages follow the new stale_timeout; a
        lower max_connections closes idle connections over it now and
        checked-out ones as they come back; a higher one serves waiters."""
        ledger = self.ledger
        with ledger.lock:
            ledger.options = options
            ledger.slots.limit = options.max_connections
            for record in self.every_connection():
                if not record.recycled:
                    record.set_age_limit(options.stale_timeout)
            excess = ledger.idle.take_all() if discard_idle else []
            limit = options.max_connections
            over = 0 if limit is None else ledger.open_count() - limit
            while over > 0 and ledger.idle:
                excess.append(ledger.idle.pop_oldest())
                over -= 1
            ledger.slots.shrinking = over > 0
            jobs = [ledger.close_taken(r) for r in excess]
            jobs += ledger.slot_freed(time.monotonic())
        ledger.dispatch(jobs)

    def recycle(self, now: float) -> int:
        """Every connection is to be replaced: idle ones now, checked-out
        ones at check-in, those out for a ping or a reset when they come
        back, connects under way when they land. Returns how many."""
        ledger = self.ledger
        with ledger.lock:
            out = ledger.slots.out.values()
            for record in (*ledger.in_use.values(), *out):
                record.recycle()
            idle = ledger.idle.take_all()
            count = len(idle) + len(ledger.in_use) + len(out) + len(
                ledger.slots.opening)
            ledger.counters.recycled += count
            ledger.recycled_at = now
            jobs = [ledger.retire_taken(record) for record in idle]
        ledger.dispatch(jobs)
        return count

    # -- Taking connections for the caller to close ---------------------------

    def take_idle_all(self) -> List[PoolConnection]:
        """Every idle connection, its slot held for the caller's close
        (``closed_by_caller`` frees them)."""
        ledger = self.ledger
        with ledger.lock:
            records = ledger.idle.take_all()
            ledger.slots.closing += len(records)
            return records

    def take_back_older(self, cutoff: float) -> List[PoolConnection]:
        """Connections checked out before ``cutoff``, taken from their
        holders (close_stale); their slots held for the caller's close."""
        ledger = self.ledger
        with ledger.lock:
            stale = [r for r in ledger.in_use.values()
                     if r.checked_out < cutoff]
            self._take_back(stale)
            return stale

    def _take_back(self, held: List[PoolConnection]) -> None:
        # The pool closes these while threads hold them: their holders'
        # close() must not put them back.
        ledger = self.ledger
        for record in held:
            del ledger.in_use[record.key]
            ledger.closed_keys[record.key] = record.owner
        ledger.slots.closing += len(held)
        ledger.tell_watchers()

    def detach(self, key: Any) -> Optional[PoolConnection]:
        """A checked-out connection its holder closes itself
        (manual_close): its slot is held until ``closed_by_caller``."""
        ledger = self.ledger
        with ledger.lock:
            record = ledger.untake(key)
            if record is None:
                return None
            ledger.counters.checked_in(time.monotonic() - record.checked_out)
            ledger.slots.closing += 1
            ledger.tell_watchers()
            return record

    def closed_by_caller(self, count: int) -> None:
        """The caller closed ``count`` connections whose slots it held."""
        ledger = self.ledger
        with ledger.lock:
            ledger.slots.closing -= count
            ledger.counters.closed_some(count)
            jobs = ledger.slot_freed(time.monotonic())
        ledger.dispatch(jobs)

    def reclaim(self, ended: Optional[Owner] = None) -> None:
        """Take back the connections of a thread that ended without
        close() (``ended``, from its guard; or any dead owner): a worker
        rolls each back, then returns it to the pool. Logs each one."""
        ledger = self.ledger
        with ledger.lock:
            dead = self._take_from_dead(ended, time.monotonic())
            jobs: Jobs = [ledger.send_out(r, ResetConnection) for r in dead]
        _log_reclaimed(dead)
        ledger.dispatch(jobs)

    def reclaim_one(self, key: Any) -> None:
        """Take back connection ``key`` if its holder has ended (the
        asyncio face: pwasyncio releases the connection of a task that
        ended without aclose()), as ``reclaim`` does; nothing if it is
        no longer checked out or its holder lives."""
        ledger = self.ledger
        with ledger.lock:
            record = ledger.in_use.get(key)
            if (record is None or record.owner is None
                    or record.owner.is_alive()):
                return
            self._take_back_from_dead(record, time.monotonic())
            job = ledger.send_out(record, ResetConnection)
        _log_reclaimed([record])
        ledger.dispatch([job])

    def reclaim_if_full(self) -> None:
        """The scan for dead owners, by the first thread about to wait
        with the pool full (not by each one queueing behind it: it costs an
        is_alive() per checked-out connection). Threads' guards reclaim at
        thread exit; this is the fallback."""
        ledger = self.ledger
        # Read without the lock (a heuristic: reclaim() takes it): most
        # waiting checkouts find others waiting, and pay nothing.
        if ledger.waiters or ledger.free_slots() > 0:
            return
        self.reclaim()

    def _take_from_dead(self, ended: Optional[Owner],
                        now: float) -> List[PoolConnection]:
        """Out of in_use: the connections held by ``ended`` (a thread that
        ended without close()) or, without it, by any owner no longer
        alive; the caller sends each out for a reset (rule 5)."""
        def gone(owner: Optional[Owner]) -> bool:
            if ended is not None:
                return owner is ended
            return owner is not None and not owner.is_alive()

        ledger = self.ledger
        dead = [r for r in ledger.in_use.values() if gone(r.owner)]
        for record in dead:
            self._take_back_from_dead(record, now)
        for key, holder in list(ledger.closed_keys.items()):
            if gone(holder):
                del ledger.closed_keys[key]
        return dead

    def _take_back_from_dead(self, record: PoolConnection,
                             now: float) -> None:
        ledger = self.ledger
        del ledger.in_use[record.key]
        ledger.counters.reclaimed += 1
        ledger.counters.checked_in(now - record.checked_out)

    def overdue(self, jobs: List[Optional[Job]], count: int) -> None:
        """``count`` pieces of the pool's own I/O ran past their deadline
        (watchdog.py); ``jobs``: those of them under way for a job that
        nothing could cut short. Waiters stop counting on those (their
        slots stay held: the connection may exist on the server), and get
        connects of their own where slots are free. The caller holds the
        watchdog's lock, so each job is still under way."""
        ledger = self.ledger
        with ledger.lock:
            ledger.counters.io_timeouts += count
            for job in jobs:
                if (job is not None and job.kind != 'close'
                        and not job.overdue):
                    job.overdue = True
                    ledger.slots.overdue += 1
            new = ledger.start_for_waiters(time.monotonic())
        ledger.dispatch(new)

    # -- close_all() ----------------------------------------------------------

    def shut_down(self, own_key: Any, caller: Optional[Owner],
                  deferred: bool, drain: bool
                  ) -> Tuple[List[PoolConnection], Set[Any]]:
        """close_all(), first step: disown the work under way; with
        ``drain``, fail the waiters and refuse checkouts until ``finish``.
        The caller's own connections (``own_key``, its peewee connection,
        and any checked out by ``caller``) cannot come back while it waits:
        they are taken now (returned, for the caller to close), or, if
        ``deferred``, left with it, doomed: each is closed, not replaced,
        whenever it is checked in. Returns those taken and the keys of the
        caller's own."""
        ledger = self.ledger
        with ledger.lock:
            own = [r for r in ledger.in_use.values()
                   if r.key == own_key or (caller is not None
                                           and r.owner is caller)]
            if deferred:
                for record in own:
                    record.recycle()
                    record.doomed = True
                taken = []
            else:
                for record in own:
                    del ledger.in_use[record.key]
                    if record.key != own_key:    # its holder checks it in
                        ledger.closed_keys[record.key] = record.owner
                ledger.slots.closing += len(own)
                taken = own
            ledger.epoch += 1
            ledger.started = False
            if drain:
                # Checkouts are refused while it drains: the waiters too.
                # (Without a drain they stay in line, and new connections
                # serve them once the old ones are closed, as in peewee.)
                self.fail_waiters('The pool was closed (close_all) while '
                                  'waiting.')
                ledger.draining += 1
            return taken, {r.key for r in own}

    def drained(self, own_keys: Set[Any]) -> bool:
        """Nothing is checked out but the caller's own?"""
        with self.ledger.lock:
            return self.ledger.in_use.keys() <= own_keys

    def finish(self, own_keys: Set[Any], drain: bool
               ) -> List[PoolConnection]:
        """close_all(), last step: every idle connection and every one still
        checked out (not the caller's own), for the caller to close."""
        ledger = self.ledger
        with ledger.lock:
            if drain:
                ledger.draining -= 1
            records = ledger.idle.take_all()
            ledger.slots.closing += len(records)
            held = [r for r in ledger.in_use.values()
                    if r.key not in own_keys]
            self._take_back(held)
            return records + held

    def fail_waiters(self, message: str) -> None:
        """Fail every waiter with PoolClosedError (each its own: one shared
        would chain every waiter's traceback and frames to the others')."""
        ledger = self.ledger
        with ledger.lock:
            now = time.monotonic()
            for waiter in ledger.waiters.take_all():
                ledger.counters.wait_seconds += now - waiter.since
                waiter.fail(PoolClosedError(message))

    def forget(self) -> List[PoolConnection]:
        """Drop every connection without closing any (dispose()): the
        ledger starts empty; connects under way still land in it."""
        ledger = self.ledger
        with ledger.lock:
            records = ledger.idle.take_all() + list(ledger.in_use.values())
            ledger.in_use.clear()
            ledger.closed_keys.clear()
            ledger.tell_watchers()
            return records

    def every_connection(self) -> List[PoolConnection]:
        """Idle, checked out and out for a ping or reset. Without the lock:
        a forked child reads them while another thread of the parent may
        have held it (forever, in the child); reconfigure() holds it."""
        ledger = self.ledger
        return (list(ledger.idle) + list(ledger.in_use.values())
                + list(ledger.slots.out.values()))

    def has_minimum(self) -> bool:
        ledger = self.ledger
        with ledger.lock:
            return (len(ledger.idle) + len(ledger.in_use)
                    >= ledger.options.min_connections)

    def opened_count(self) -> int:
        """Connections open now (idle and checked out)."""
        ledger = self.ledger
        with ledger.lock:
            return len(ledger.idle) + len(ledger.in_use)

    def fill(self) -> None:
        """Open connections up to min_connections, if the pool has
        started."""
        ledger = self.ledger
        with ledger.lock:
            jobs = ledger.fill_up()
        ledger.dispatch(jobs)


def _log_reclaimed(records: List[PoolConnection]) -> None:
    for record in records:
        logger.warning('Reclaimed connection %s from %s %r, which ended '
                       'without closing it.', record.key, record.holder_kind,
                       record.holder)
