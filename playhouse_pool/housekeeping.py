"""The pool's one background thread: idle eviction and leak warnings.

It runs only for pools with ``idle_timeout`` or ``leak_timeout`` set, holds
the pool by a weak reference (a forgotten pool is collected and the thread
ends), and does its work through the pool's own methods, so the bookkeeping
rules are the same as on the checkout path.
"""
import threading
import weakref
from typing import Any

# Ticks are at most this far apart, and at least this close to the
# smallest timeout they enforce (half of it).
_MAX_TICK = 60.0
_MIN_TICK = 0.01


def tick_seconds(*timeouts: Any) -> float:
    given = [t for t in timeouts if t]
    return max(_MIN_TICK, min([_MAX_TICK] + [t / 2 for t in given]))


class Housekeeper(threading.Thread):
    def __init__(self, pool: Any) -> None:
        super().__init__(name='playhouse_pool-housekeeper', daemon=True)
        self._pool = weakref.ref(pool)
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        while True:
            pool = self._pool()
            if pool is None or pool._housekeeper is not self:
                return
            interval = pool._housekeep()
            del pool       # hold no strong reference while asleep
            if self._stop_event.wait(interval):
                return
