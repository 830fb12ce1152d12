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
each listener's handler in turn, on the pool's hot path, sometimes under the
pool lock and sometimes under no lock at all. So a listener must be quick,
must not block, do I/O or call back into the pool, and must be safe to call
from several threads at once without a lock of its own.

The collectors (``playhouse_pool.prometheus``, ``playhouse_pool.otel``)
share one listener per pool, :class:`PoolTimes`: three
:class:`TimeHistogram` (wait, use, connect) whose handler is a bare
``deque.append``. The values are binned off the request path: at each
collection, and once a second by a background thread so that memory stays
bounded when nothing collects. Counts and totals come from ``pool_stats()``.
"""
import bisect
import os
import threading
import weakref
from array import array
from collections import deque
from typing import (Any, Callable, Deque, Iterable, List, Optional, Sequence,
                    Tuple)

__all__ = ['BUCKETS', 'PoolEvents', 'PoolListener', 'PoolTimes', 'Tap',
           'TimeHistogram', 'count_into', 'events_of']

#: Upper bounds (seconds) of the histogram buckets: 10 us to 50 s, three
#: per decade. A checkout served from an idle connection takes tens of
#: microseconds, a connect milliseconds, a wait at the limit up to
#: ``timeout``; a held connection anything from a query to a long job.
BUCKETS: Tuple[float, ...] = tuple(
    mantissa * 10.0 ** exponent
    for exponent in range(-5, 2) for mantissa in (1.0, 2.5, 5.0))

# Seconds between two background folds of the pending values: what waits
# unbinned is at most this long's worth of events (a few MB at 100,000 a
# second).
FOLD_EVERY = 1.0

# Values kept for a tap (an OpenTelemetry meter that has not collected yet)
# at most; beyond this they are counted in Tap.dropped instead (8 MB each).
TAP_CAPACITY = 1 << 20

_EVENTS = ('checkout', 'checkin', 'connected', 'connect_failed', 'timeout',
           'closed')

Handler = Callable[..., None]


class PoolListener:
    """Base for listeners of a pool's events: every method does nothing,
    override those you need (an event left to the base costs nothing). See
    the module docstring for the rules a listener lives by (quick,
    non-blocking, thread-safe without a lock)."""

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

    def _handler(self, event: str) -> Optional[Handler]:
        # What the pool calls for ``event``: the method, unless it is the
        # base's no-op (then nothing is called at all).
        method = getattr(self, event)
        if getattr(method, '__func__', None) is getattr(PoolListener, event):
            return None
        return method


def _nothing(*args: Any) -> None:
    """An event no listener handles."""


def _fan_out(handlers: Tuple[Handler, ...]) -> Handler:
    def each(*args: Any) -> None:
        for handler in handlers:
            handler(*args)
    return each


def _dispatch(handlers: Tuple[Handler, ...]) -> Handler:
    # One handler is called directly: for the collectors' histograms that is
    # a C function (deque.append), no Python frame on the request path.
    if not handlers:
        return _nothing
    return handlers[0] if len(handlers) == 1 else _fan_out(handlers)


# Taken by attach() and detach() (rare): one for every pool.
_attaching = threading.Lock()


class PoolEvents:
    """A pool's events. Each event (``checkout``, ``checkin``,
    ``connected``, ``connect_failed``, ``timeout``, ``closed``) is an
    attribute holding what to call: the one listener's handler, a call of
    each in turn, or nothing.

    ``listeners`` and the events are replaced whole by :meth:`attach` and
    :meth:`detach`, so the pool reads them without a lock; it tests
    ``listeners`` before each event.
    """
    __slots__ = ('listeners', '_times') + _EVENTS

    checkout: Callable[[float], None]
    checkin: Callable[[float], None]
    connected: Callable[[float], None]
    connect_failed: Callable[[], None]
    timeout: Callable[[], None]
    closed: Callable[[int], None]

    def __init__(self) -> None:
        self._times: Optional[PoolTimes] = None
        self._set(())

    def _set(self, listeners: Tuple[PoolListener, ...]) -> None:
        # The events first: once ``listeners`` is non-empty the pool calls.
        for event in _EVENTS:
            found = (listener._handler(event) for listener in listeners)
            setattr(self, event,
                    _dispatch(tuple(h for h in found if h is not None)))
        self.listeners: Tuple[PoolListener, ...] = listeners

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


def count_into(counts: List[int], bounds: Sequence[float],
               ordered: Sequence[float]) -> None:
    """Add sorted values ``ordered`` to per-bucket ``counts`` (one per
    bound, inclusive upper limits, then +Inf). Sorted, a bucket's count is
    a difference of two bisections: one C call per bound, not a Python step
    per value."""
    below = 0
    for index, bound in enumerate(bounds):
        upto = bisect.bisect_right(ordered, bound)         # values <= bound
        counts[index] += upto - below
        below = upto
    counts[-1] += len(ordered) - below


class TimeHistogram:
    """A cumulative histogram of one of the pool's times, in seconds, with
    fixed bucket upper bounds (``bounds``, inclusive, plus +Inf).

    ``add(seconds)`` counts one value, from any thread, with or without a
    lock: it is the ``append`` of a deque (atomic, documented thread-safe).
    The pending values are binned by :meth:`snapshot` and :meth:`take`, at
    collection, and by the background fold (``FOLD_EVERY``).
    """

    def __init__(self, bounds: Sequence[float] = BUCKETS) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError('TimeHistogram bounds must increase: %r'
                             % (bounds,))
        self.bounds = tuple(float(b) for b in bounds)
        self._pending: Deque[float] = deque()
        self.add: Callable[[float], None] = self._pending.append
        self._counts = [0] * (len(self.bounds) + 1)
        self._sum = 0.0
        self._taps: Tuple[Tap, ...] = ()
        self._lock = threading.Lock()
        _Folder.watch(self)

    def fold(self) -> None:
        """Bin the pending values (and hand them to the taps)."""
        with self._lock:
            self._fold()

    def _fold(self) -> None:
        # Under self._lock, the only place values leave _pending: the n
        # counted here are all there (adders only append), and values
        # appended meanwhile wait for the next fold.
        pending = self._pending
        popleft = pending.popleft
        values = [popleft() for _ in range(len(pending))]
        if not values:
            return
        count_into(self._counts, self.bounds, sorted(values))
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


class _Folder(threading.Thread):
    """The background fold: bins every live histogram's pending values each
    ``FOLD_EVERY`` seconds, so that a pool nobody collects from does not
    pile them up. One per process, started with the first histogram; it
    ends when no histogram is left (and starts again with the next)."""
    _histograms: 'weakref.WeakSet[TimeHistogram]' = weakref.WeakSet()
    _running: Optional['_Folder'] = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        super().__init__(name='playhouse_pool-metrics-fold', daemon=True)

    @classmethod
    def watch(cls, histogram: TimeHistogram) -> None:
        with cls._lock:
            cls._histograms.add(histogram)
            if cls._running is None:
                cls._running = cls()
                cls._running.start()

    @classmethod
    def _live(cls) -> Iterable[TimeHistogram]:
        with cls._lock:
            histograms = list(cls._histograms)
            if not histograms:
                cls._running = None      # watch() starts a new one
            return histograms

    def run(self) -> None:
        event = threading.Event()        # never set: an interruptible sleep
        while True:
            event.wait(FOLD_EVERY)
            histograms = self._live()
            if not histograms:
                return
            for histogram in histograms:
                histogram.fold()
            del histograms, histogram    # no strong reference while asleep

    @classmethod
    def _after_fork_in_child(cls) -> None:
        # The parent's threads are gone and their locks may be held.
        cls._lock = threading.Lock()
        cls._running = None
        histograms = list(cls._histograms)
        for histogram in histograms:
            histogram._after_fork()
        if histograms:
            cls._running = cls()
            cls._running.start()


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

    def _handler(self, event: str) -> Optional[Handler]:
        # The histograms' add itself (deque.append, in C), not the methods
        # above that call it (which say the same for a reader).
        histogram = {'checkout': self.wait, 'checkin': self.use,
                     'connected': self.connect}.get(event)
        return histogram.add if histogram is not None else None


def _after_fork_in_child() -> None:
    global _attaching
    _attaching = threading.Lock()
    _Folder._after_fork_in_child()


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_after_fork_in_child)
