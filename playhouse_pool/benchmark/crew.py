"""Threads for the scenarios: start a crew, join it, never hang forever."""
from __future__ import annotations

import sys
import threading
import time
from typing import Callable, Iterable, List, Optional, Sequence

from .._redact import redact
from .pools import Adapter

clock = time.perf_counter

HUNG_AFTER = 60.0           # a scenario still running then is reported hung


class ScenarioHung(RuntimeError):
    """Worker threads did not finish in time (the pool may be deadlocked)."""


class Crew:
    """Worker threads for one scenario step. The first error breaks the
    step's barriers, so no thread waits forever for one that died."""

    def __init__(self, workers: Sequence[Callable[[], None]],
                 barriers: Iterable[threading.Barrier] = ()) -> None:
        self.errors: List[BaseException] = []
        self.barriers = list(barriers)
        self.threads = [threading.Thread(target=self._run, args=(w,),
                                         daemon=True, name='bench-%d' % i)
                        for i, w in enumerate(workers)]
        for thread in self.threads:
            thread.start()

    def _run(self, worker: Callable[[], None]) -> None:
        try:
            worker()
        except threading.BrokenBarrierError:
            pass            # another worker failed: its error is the one
        except BaseException as exc:
            self.errors.append(exc)
            for barrier in self.barriers:
                barrier.abort()

    def join(self, timeout: float,
             tick: Optional[Callable[[float], None]] = None) -> None:
        """Wait for every worker; re-raise the first error."""
        start = clock()
        for thread in self.threads:
            while thread.is_alive() and clock() - start < timeout:
                remaining = timeout - (clock() - start)
                thread.join(min(remaining, 0.25) if tick else remaining)
                if tick:
                    tick(clock() - start)
        if self.errors:
            raise self.errors[0]
        alive = sum(t.is_alive() for t in self.threads)
        if alive:
            for barrier in self.barriers:
                barrier.abort()
            raise ScenarioHung('%d of %d threads still running after %.0f s'
                               % (alive, len(self.threads), timeout))


def barrier(parties: int, action: Optional[Callable[[], None]] = None
            ) -> threading.Barrier:
    return threading.Barrier(parties, action, timeout=HUNG_AFTER)


def prewarm(adapter: Adapter, count: int) -> None:
    """Open ``count`` connections at once and return them: idle, ready."""
    all_held = barrier(count)

    def hold() -> None:
        handle = adapter.checkout()
        try:
            all_held.wait()
        finally:
            adapter.checkin(handle)

    Crew([hold] * count, [all_held]).join(HUNG_AFTER)


def close_quietly(adapter: Adapter) -> None:
    """Close the pool, but never let a stuck pool stop the benchmark."""
    crew = Crew([adapter.close])
    try:
        crew.join(10.0)
    except Exception as exc:
        print('warning: closing the pool failed: %s' % describe(exc),
              file=sys.stderr)


def describe(exc: BaseException) -> str:
    """One line for an error: its type and its redacted message."""
    text = ' '.join(str(exc).split())
    return '%s: %s' % (type(exc).__name__, redact(text)[:200])
