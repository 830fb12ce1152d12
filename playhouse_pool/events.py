"""The pool's events: the one record of what a pool does, for collectors.

Each pooled database has a :class:`PoolEvents` (``db._events``). The pool
calls it where each event happens:

==================== ====================================================
event                when, with what
==================== ====================================================
``checkout(wait)``   a checkout was served; ``wait``: seconds from the
                     start of ``connect()`` (or of a block's checkout)
                     until the connection was handed over, all included
                     (waiting for a free one, checking it, any connect)
``checkin(use)``     a checked-out connection came back (or was reclaimed
                     from a thread that ended); ``use``: seconds it was
                     held
``connected(secs)``  a new connection was opened; ``secs``: how long the
                     successful attempt took
``connect_failed()`` a connect attempt failed (each retry counts)
``timeout()``        a checkout was refused with ``MaxConnectionsExceeded``
                     (timed out, or refused at once)
``closed(count)``    ``count`` connections were closed by the pool
==================== ====================================================

Cost: with no listener attached the pool only tests ``listeners`` (an empty
tuple) at each event and calls nothing. With listeners, each event calls
each listener in turn, on the pool's hot path, sometimes under the pool
lock and sometimes under no lock at all. So a listener must be quick, must
not block, do I/O or call back into the pool, and must be safe to call from
several threads at once without a lock of its own.

The collectors (``playhouse_pool.prometheus``, ``playhouse_pool.otel``)
share one listener per pool, :class:`PoolTimes`: three
:class:`TimeHistogram` (wait, use, connect) that take each value with one
lock-free ``deque.append`` and bin them in batches, off the hot path or once
every few hundred events. Counts and totals come from ``pool_stats()``.
"""
import bisect
import os
import threading
import weakref
from array import array
from collections import deque
from typing import Any, Callable, Deque, List, Optional, Sequence, Tuple

__all__ = ['BUCKETS', 'PoolEvents', 'PoolListener', 'PoolTimes', 'Tap',
           'TimeHistogram', 'events_of']

#: Upper bounds (seconds) of the histogram buckets: 10 us to 50 s, three
#: per decade. A checkout served from an idle connection takes tens of
#: microseconds, a connect milliseconds, a wait at the limit up to
#: ``timeout``; a held connection anything from a query to a long job.
BUCKETS: Tuple[float, ...] = tuple(
    mantissa * 10.0 ** exponent
    for exponent in range(-5, 2) for mantissa in (1.0, 2.5, 5.0))

# A histogram bins its pending values once this many are waiting, on the
# thread that adds the last one: a few tens of microseconds once every few
# hundred events, so memory stays bounded even if nothing ever collects.
_FOLD_AT = 256

# Values kept for a tap (an OpenTelemetry meter that has not collected yet)
# at most; beyond this they are counted in Tap.dropped instead (8 MB each).
TAP_CAPACITY = 1 << 20


class PoolListener:
    """Base for listeners of a pool's events: every method does nothing,
    override those you need. See the module docstring for the rules a
    listener lives by (quick, non-blocking, thread-safe without a lock)."""

    def checkout(self, wait: float) -> None:
        """A checkout was served after ``wait`` seconds."""

    def checkin(self, use: float) -> None:
        """A connection held for ``use`` seconds came back."""

    def connected(self, seconds: float) -> None:
        """A connection was opened in ``seconds``."""

    def connect_failed(self) -> None:
        """A connect attempt failed."""

    def timeout(self) -> None:
        """A checkout was refused with MaxConnectionsExceeded."""

    def closed(self, count: int) -> None:
        """``count`` connections were closed."""

    def _handler(self, event: str) -> Optional[Callable[..., None]]:
        # What the pool calls for ``event``: the method, unless it is the
        # base's no-op (then nothing is called at all).
        method = getattr(self, event)
        if getattr(method, '__func__', None) is getattr(PoolListener, event):
            return None
        return method


# Taken by attach() and detach() (rare): one for every pool.
_attaching = threading.Lock()


class PoolEvents:
    """A pool's events, told to each of ``listeners`` in turn.

    ``listeners`` is a tuple, replaced whole by :meth:`attach` and
    :meth:`detach`, so the pool reads it without a lock and an event never
    sees it half changed. Each event calls a tuple of its own, of the
    listeners' handlers for it, so a listener that leaves an event to the
    base's no-op costs that event nothing.
    """
    __slots__ = ('listeners', '_times', '_on_checkout', '_on_checkin',
                 '_on_connected', '_on_connect_failed', '_on_timeout',
                 '_on_closed')

    def __init__(self) -> None:
        self.listeners: Tuple[PoolListener, ...] = ()
        self._times: Optional[PoolTimes] = None
        self._set(())

    def _set(self, listeners: Tuple[PoolListener, ...]) -> None:
        def handlers(event: str) -> Tuple[Callable[..., None], ...]:
            found = (listener._handler(event) for listener in listeners)
            return tuple(h for h in found if h is not None)

        # Handlers first: once ``listeners`` is non-empty the pool calls.
        self._on_checkout = handlers('checkout')
        self._on_checkin = handlers('checkin')
        self._on_connected = handlers('connected')
        self._on_connect_failed = handlers('connect_failed')
        self._on_timeout = handlers('timeout')
        self._on_closed = handlers('closed')
        self.listeners = listeners

    def attach(self, listener: PoolListener) -> None:
        """Tell ``listener`` of every event from now on."""
        with _attaching:
            self._set(self.listeners + (listener,))

    def detach(self, listener: PoolListener) -> None:
        """Stop telling ``listener``; ``ValueError`` if it is not
        attached."""
        with _attaching:
            listeners = list(self.listeners)
            listeners.remove(listener)
            self._set(tuple(listeners))

    def times(self) -> 'PoolTimes':
        """The pool's wait, use and connect histograms, shared by every
        collector: attached on the first call, counting from then on."""
        with _attaching:
            if self._times is None:
                self._times = PoolTimes()
                self._set(self.listeners + (self._times,))
            return self._times

    # The events, as the pool calls them.

    def checkout(self, wait: float) -> None:
        for handler in self._on_checkout:
            handler(wait)

    def checkin(self, use: float) -> None:
        for handler in self._on_checkin:
            handler(use)

    def connected(self, seconds: float) -> None:
        for handler in self._on_connected:
            handler(seconds)

    def connect_failed(self) -> None:
        for handler in self._on_connect_failed:
            handler()

    def timeout(self) -> None:
        for handler in self._on_timeout:
            handler()

    def closed(self, count: int) -> None:
        for handler in self._on_closed:
            handler(count)


def events_of(db: Any) -> PoolEvents:
    """The :class:`PoolEvents` of pooled database ``db``; ``TypeError`` if
    ``db`` is not one."""
    events = getattr(db, '_events', None)
    if not isinstance(events, PoolEvents):
        raise TypeError('%s is not a pooled database (no pool events)'
                        % type(db).__name__)
    return events


class Tap:
    """The raw values a :class:`TimeHistogram` took since they were last
    taken, for a collector that aggregates them itself (OpenTelemetry's
    SDK, with the buckets its views choose). Holds ``TAP_CAPACITY`` values
    at most; what does not fit is counted in ``dropped``."""
    __slots__ = ('_values', 'dropped', 'capacity')

    def __init__(self, capacity: int = TAP_CAPACITY) -> None:
        self._values = array('d')
        self.dropped = 0
        self.capacity = capacity

    def _extend(self, values: List[float]) -> None:
        # Under the histogram's lock.
        room = self.capacity - len(self._values)
        if room < len(values):
            self.dropped += len(values) - max(room, 0)
            values = values[:max(room, 0)]
        self._values.extend(values)

    def _take(self) -> 'array[float]':
        # Under the histogram's lock.
        values, self._values = self._values, array('d')
        return values


_histograms: 'weakref.WeakSet[TimeHistogram]' = weakref.WeakSet()


class TimeHistogram:
    """A cumulative histogram of one of the pool's times, in seconds, with
    fixed bucket upper bounds (``bounds``, inclusive, plus +Inf).

    :meth:`add` is the hot path: one ``deque.append`` (atomic, so no lock)
    and a length check. The pending values are binned by :meth:`snapshot`
    or :meth:`take`, at collection, and by :meth:`add` itself once
    ``_FOLD_AT`` are pending (if no other thread is binning just then).
    """

    def __init__(self, bounds: Sequence[float] = BUCKETS) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError('TimeHistogram bounds must increase: %r'
                             % (bounds,))
        self.bounds = tuple(float(b) for b in bounds)
        self._pending: Deque[float] = deque()
        self._counts = [0] * (len(self.bounds) + 1)
        self._sum = 0.0
        self._taps: Tuple[Tap, ...] = ()
        self._lock = threading.Lock()
        _histograms.add(self)

    def add(self, seconds: float) -> None:
        """Count one value (from any thread, with or without a lock)."""
        pending = self._pending
        pending.append(seconds)
        if len(pending) >= _FOLD_AT and self._lock.acquire(False):
            try:
                self._fold()
            finally:
                self._lock.release()

    def _fold(self) -> None:
        # Under self._lock, the only place values leave _pending: the n
        # counted here are all there (adders only append), and values
        # appended meanwhile wait for the next fold.
        pending = self._pending
        popleft = pending.popleft
        values = [popleft() for _ in range(len(pending))]
        if not values:
            return
        # Sorted, a bucket's count is a difference of two bisections: 22 of
        # them in C, not a Python step per value (a third of the time).
        ordered = sorted(values)
        counts, below = self._counts, 0
        for index, bound in enumerate(self.bounds):
            upto = bisect.bisect_right(ordered, bound)     # values <= bound
            counts[index] += upto - below
            below = upto
        counts[-1] += len(ordered) - below
        self._sum += sum(values)
        for tap in self._taps:
            tap._extend(values)

    def snapshot(self) -> Tuple[List[int], float]:
        """(count per bucket, not cumulative, the last one +Inf; sum of the
        values) of every value added so far."""
        with self._lock:
            self._fold()
            return list(self._counts), self._sum

    def tap(self, capacity: int = TAP_CAPACITY) -> Tap:
        """A new :class:`Tap` that gets every value added from now on."""
        tap = Tap(capacity)
        with self._lock:
            self._fold()             # values before now are not the tap's
            self._taps = self._taps + (tap,)
        return tap

    def untap(self, tap: Tap) -> None:
        """Stop filling ``tap``."""
        with self._lock:
            self._taps = tuple(t for t in self._taps if t is not tap)

    def take(self, tap: Tap) -> 'array[float]':
        """Every value added since ``tap``'s last take (pending ones too),
        in the order they were added."""
        with self._lock:
            self._fold()
            return tap._take()

    def _after_fork(self) -> None:
        # Another thread of the parent may have held the lock.
        self._lock = threading.Lock()


class PoolTimes(PoolListener):
    """The listener the collectors share: the pool's times as histograms.

    ``wait``: how long each checkout took; ``use``: how long each connection
    was held; ``connect``: how long each new connection took to open.
    """

    def __init__(self) -> None:
        self.wait = TimeHistogram()
        self.use = TimeHistogram()
        self.connect = TimeHistogram()

    def checkout(self, wait: float) -> None:
        self.wait.add(wait)

    def checkin(self, use: float) -> None:
        self.use.add(use)

    def connected(self, seconds: float) -> None:
        self.connect.add(seconds)

    def _handler(self, event: str) -> Optional[Callable[..., None]]:
        # The histograms' add itself, one call less on the hot path than
        # the methods above (which say the same for a reader).
        histogram = {'checkout': self.wait, 'checkin': self.use,
                     'connected': self.connect}.get(event)
        return histogram.add if histogram is not None else None


def _after_fork_in_child() -> None:
    global _attaching
    _attaching = threading.Lock()
    for histogram in list(_histograms):
        histogram._after_fork()


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_after_fork_in_child)
