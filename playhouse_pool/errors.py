"""Exceptions the pool raises itself (driver errors pass through peewee's)."""
import heapq
from typing import Any, Iterable, NamedTuple, Optional, Sequence

from peewee import OperationalError

from ._options import IO_GRACE, PoolOptions
from ._redact import redact

# How many of the longest holders a MaxConnectionsExceeded names.
HOLDERS_SHOWN = 3


class MaxConnectionsExceeded(ValueError):
    """No connection could be had: the pool is at ``max_connections`` and
    none came free in time, or a connect under way for the caller did not
    finish in time (or ``timeout`` is None and none was free at once, or
    ``max_waiting`` threads were already waiting). The message says what the
    caller waited for.

    Subclasses ``ValueError`` as peewee's own ``MaxConnectionsExceeded`` does,
    so code written for ``playhouse.pool`` keeps catching it. Its message
    says why the pool ran dry: the maximum, how many connections are open,
    in use and waited for, how long the caller waited, and who holds the
    connections longest (see README, "When the pool runs dry").
    """


class PoolClosedError(MaxConnectionsExceeded):
    """The pool is shutting down (``close_all()`` is draining it or failed the
    waiters). Retry after ``close_all()`` returns: the pool is usable again.
    """


class ConfigureError(OperationalError):
    """The ``configure`` callable failed on a new connection: that
    connection was closed (and, within ``timeout``, another one tried). The
    callable's own error is chained (``__cause__``)."""


class Holder(NamedTuple):
    """A checked-out connection, as a MaxConnectionsExceeded names it."""
    seconds: float          # held for
    thread: str             # the holder's thread name ('?' if shared)
    site: Optional[str]     # its checkout's call site (with leak_timeout)
    kind: str = 'thread'    # 'task' on the asyncio face


class DryPool(NamedTuple):
    """The pool's figures at the moment a checkout was refused (the same
    as ``pool_stats()`` then)."""
    max_connections: Optional[int]
    open: int
    in_use: int
    waiting: int            # other threads still waiting
    holders: Sequence[Holder]   # the longest held, first (at most 3)
    sites_recorded: bool    # leak_timeout is set


def dry_pool(max_connections: Optional[int], idle: int, in_use: Iterable[Any],
             waiting: int, sites_recorded: bool, now: float) -> DryPool:
    """The figures for a refused checkout's message, with the longest of
    the ``in_use`` holders (records.PoolConnection)."""
    held = list(in_use)
    longest = heapq.nsmallest(HOLDERS_SHOWN, held,
                              key=lambda r: r.checked_out)
    return DryPool(
        max_connections, idle + len(held), len(held), waiting,
        [Holder(now - r.checked_out, r.holder, r.call_site, r.holder_kind)
         for r in longest], sites_recorded)


def awaited_phrase(position: int, coming: int, now: float,
                   connects: Sequence[float]) -> str:
    """What a waiter at ``position`` in line waited for: the connects
    under way (started at ``connects``) cover the first waiters, then
    connections out for a ping or reset (``coming`` in all)."""
    if position < len(connects):
        return 'a connect under way (no answer for %.1fs)' % (
            now - min(connects))
    if position < coming:
        return 'a connection being checked or replaced'
    return 'a connection to be checked in'


def timed_out_why(awaited: str, options: PoolOptions) -> str:
    """Why a waiter gave up: what it waited for, and for how long it
    might."""
    if options.timeout is None:
        return ('timed out waiting for %s (timeout=None: one connect '
                'attempt, %.3gs)' % (awaited, options.io_seconds + IO_GRACE))
    return 'timed out waiting for %s within timeout=%ss' % (awaited,
                                                            options.timeout)


def warm_up_failed(opened: int, minimum: int, name: str,
                   timeout: Optional[float],
                   failing: Optional[BaseException]) -> BaseException:
    """warm_up() ran out of ``timeout``: ``opened`` of ``minimum`` are open
    (``failing``, the connect error of the moment, chained)."""
    error = OperationalError(
        'playhouse_pool opened %d of min_connections=%d to %s within %ss%s'
        % (opened, minimum, name, timeout,
           ': ' + describe(failing) if failing else ''))
    error.__cause__ = failing
    return error


def pool_exhausted(why: str, waited: float,
                   dry: DryPool) -> MaxConnectionsExceeded:
    """The error for a checkout the pool could not serve: ``why`` (a
    clause: 'timed out after 2.0s', ...), then the figures and holders."""
    parts = ['Exceeded maximum connections: %s (waited %.3fs). '
             'max_connections=%s, open=%d, in_use=%d, waiting=%d.'
             % (why, waited, dry.max_connections, dry.open, dry.in_use,
                dry.waiting)]
    if dry.holders:
        shown = ', '.join(_holder(h) for h in dry.holders)
        more = dry.in_use - len(dry.holders)
        parts.append('Held longest: %s%s.'
                     % (shown, ' and %d more' % more if more > 0 else ''))
        if not dry.sites_recorded:
            parts.append('Set leak_timeout to see where each was checked '
                         'out.')
    return MaxConnectionsExceeded(' '.join(parts))


def _holder(holder: Holder) -> str:
    text = '%.3fs by %s %r' % (holder.seconds, holder.kind, holder.thread)
    if holder.site is not None:
        text += ', checked out at %s' % holder.site
    return text


def describe(error: BaseException) -> str:
    """``error`` fit for a log line: its class and message, no password."""
    return redact('%s: %s' % (type(error).__name__, str(error).strip()))


def could_not_connect(name: str, timeout: Optional[float],
                      cause: BaseException) -> BaseException:
    """The error for a waiter whose ``timeout`` ran out while connects to
    database ``name`` failed, ``cause`` chained."""
    error = OperationalError(
        'playhouse_pool could not connect to %s within timeout=%s: %s'
        % (name, timeout, describe(cause)))
    error.__cause__ = cause
    return error
