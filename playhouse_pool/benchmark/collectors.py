"""``--collector``: our pool once more, with a metrics collector attached
and collecting, as the row ``ours+collector`` of S1 and S2, and what that
costs, measured paired.

What is attached is what an operator runs: for ``prometheus`` the
collector of ``playhouse_pool.prometheus`` in a registry of its own, scraped
(the exposition text generated) every ``COLLECT_EVERY`` seconds; for
``otel`` ``playhouse_pool.otel.instrument()`` on an OpenTelemetry SDK
meter provider with an in-memory reader, collected as often (an exporter's
periodic reader does the same work, then sends it); ``both`` attaches the
two. The collections run on a thread of their own inside the timed work,
so their cost is counted, as it would be in a served process.

Why paired: two pools run one after the other differ by up to 15% in S2 on
a small VM (their connections' server processes land on different CPUs),
far more than the 5% a collector may cost. So the row ``ours+collector`` is
one pool whose collector is switched off and on between blocks, on the same
connections: "off" is the pool with nothing attached (no listener, no
collections), "on" attached and collecting. Its figures are the "on"
blocks'; ``paired_ratio`` is "on" against "off", the median over the pairs
(S1: time per op, in blocks of 100; S2: requests/s, in blocks of
``S2_BLOCK``, with two collections in each "on" block), the figure the
targets check. S2 runs each side twice the duration (``S2_SPAN``): its
paired figure still moves by a few percent from run to run on a busy VM.
S1's blocks (about 15 ms) are shorter than the time between collections,
and the median leaves out the few a collection falls in: S1 measures what
the collector costs each checkout, S2 that and the collections. S2 also
reports the process's CPU time per request with and without (``cpu_us``,
``without_cpu_us`` in ``--json``).
"""
from __future__ import annotations

import importlib
import statistics
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..events import events_of
from .crew import close_quietly, prewarm
from .pools import Adapter, Builder, PeeweeAdapter, Settings
from .scenarios import (S1_BLOCK, S2_CONNECTIONS, Context, Figures,
                        held_loop, s1_figures, s1_rounds, s2_block,
                        s2_figures, time_loop)
from .target import Target

COLLECTOR_NAMES = {
    'prometheus': 'the Prometheus collector',
    'otel': 'OpenTelemetry (SDK, in-memory reader)',
    'both': 'the Prometheus collector and OpenTelemetry (SDK)'}
COLLECTORS = tuple(COLLECTOR_NAMES)
# Seconds between two scrapes or collections: 60 times as often as a
# Prometheus scrape every 15 s, so that each S2 block has its share.
COLLECT_EVERY = 0.25
S2_BLOCK = 0.5          # S2: seconds per block
S2_SPAN = 2             # S2: each side runs this many times the duration

COLLECTED_NOTE = (
    'ours+collector: one pool of ours in blocks with and without its '
    'collector, alternating (S1: 100 ops, S2: %g s, so its figures are not '
    'comparable with the other rows\'); its target compares the blocks '
    'pairwise.' % S2_BLOCK)


# What each collector needs installed, and how to install it.
_NEEDS = {'prometheus': ('prometheus_client',
                         "pip install 'playhouse-pool[prometheus]'"),
          'otel': ('opentelemetry.sdk.metrics',
                   'pip install opentelemetry-sdk')}


def _parts(kind: str) -> List[str]:
    return ['prometheus', 'otel'] if kind == 'both' else [kind]


def check_available(kind: str) -> None:
    """ImportError naming what to install if ``kind`` cannot run here."""
    for part in _parts(kind):
        module, install = _NEEDS[part]
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ImportError('--collector %s needs %s: %s'
                              % (kind, module, install)) from exc


def _prometheus(db: Any) -> Callable[[], Any]:
    from prometheus_client import CollectorRegistry, generate_latest

    from ..prometheus import register
    registry = CollectorRegistry()
    register(db, registry=registry)
    return lambda: generate_latest(registry)


def _otel(db: Any) -> Callable[[], Any]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from ..otel import instrument
    reader = InMemoryMetricReader()
    instrument(db, meter_provider=MeterProvider(metric_readers=[reader]),
               pool_name='benchmark')
    return reader.get_metrics_data


_ATTACH = {'prometheus': _prometheus, 'otel': _otel}


class CollectedAdapter(PeeweeAdapter):
    """Our pool with ``kind``'s collectors attached and collecting every
    ``COLLECT_EVERY`` seconds until :meth:`close`; :meth:`switch` takes
    them off and puts them back."""

    def __init__(self, db: Any, kind: str) -> None:
        super().__init__(db)
        self.collects: List[Callable[[], Any]] = [
            _ATTACH[part](db) for part in _parts(kind)]
        self.collections = 0
        self._events = events_of(db)
        self._times = self._events.times()       # the collectors' listener
        self._on = threading.Event()
        self._on.set()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = threading.Thread(
            target=self._collect_often, name='benchmark-collector',
            daemon=True)
        self._thread.start()

    def _collect_often(self) -> None:
        while not self._stop.wait(COLLECT_EVERY):
            if self._on.is_set():
                self.collect()

    def switch(self, on: bool) -> None:
        """Off: the pool has no listener and nothing collects; on: as
        built."""
        if on == self._on.is_set():
            return
        if on:
            self._events.attach(self._times)
            self._on.set()
        else:
            self._on.clear()
            self._events.detach(self._times)

    def collect(self) -> None:
        for collect in self.collects:
            collect()
        self.collections += 1

    def close(self) -> None:
        self.switch(True)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.collect()              # what is left, as a last scrape would
        super().close()


def with_collector(build: Builder, kind: str) -> Builder:
    """``build`` (ours), with ``kind``'s collectors on each pool built."""
    def build_collected(target: Target, settings: Settings) -> Adapter:
        adapter = build(target, settings)
        assert isinstance(adapter, PeeweeAdapter)
        return CollectedAdapter(adapter.db, kind)
    return build_collected


# -- The paired runs ----------------------------------------------------------

def _collected(spec: Any, ctx: Context, settings: Settings
               ) -> CollectedAdapter:
    adapter = spec.build(ctx.target, settings)
    assert isinstance(adapter, CollectedAdapter)
    return adapter


def run_s1_paired(ctx: Context, spec: Any) -> Figures:
    """S1 on one collected pool: each round a floor block, then the pool's
    blocks without and with the collector (their order alternating)."""
    adapter = _collected(spec, ctx, Settings(1, 1))
    try:
        pooled = adapter.cycle()
        floors: List[float] = []
        times: Dict[bool, List[float]] = {False: [], True: []}
        for index in range(s1_rounds(ctx, pooled)):
            floors.append(held_loop(adapter, S1_BLOCK))
            for on in (True, False) if index % 2 else (False, True):
                adapter.switch(on)
                times[on].append(time_loop(pooled, S1_BLOCK))
        adapter.switch(True)
    finally:
        close_quietly(adapter)
    figures = s1_figures(times[True], floors)
    figures['without_us_per_op'] = s1_figures(times[False],
                                              floors)['us_per_op']
    figures['paired_ratio'] = statistics.median(
        on / off for on, off in zip(times[True], times[False]))
    return figures


def run_s2_paired(ctx: Context, spec: Any) -> Figures:
    """S2 on one collected pool: pairs of ``S2_BLOCK`` blocks without and
    with the collector, ABBA, each side ``S2_SPAN`` times the duration in
    all (at least 2 pairs): the cost to find is a few percent, the noise of
    a block about 5%."""
    adapter = _collected(spec, ctx, Settings(S2_CONNECTIONS, S2_CONNECTIONS))
    seconds = min(S2_BLOCK, ctx.duration)
    pairs = max(2, round(S2_SPAN * ctx.duration / seconds))
    blocks: Dict[bool, List[Tuple[List[List[float]], float]]] = {
        False: [], True: []}
    cpu: Dict[bool, List[float]] = {False: [], True: []}   # us per request
    try:
        prewarm(adapter, S2_CONNECTIONS)
        for index in range(pairs):
            for on in (True, False) if index % 2 else (False, True):
                adapter.switch(on)
                used = time.process_time()
                waits, elapsed = s2_block(adapter, seconds, _progress(
                    ctx, on, index + 1, pairs, seconds))
                used = time.process_time() - used
                blocks[on].append((waits, elapsed))
                cpu[on].append(used / sum(len(w) for w in waits) * 1e6)
        adapter.switch(True)
    finally:
        close_quietly(adapter)
    rates = {on: [sum(len(w) for w in waits) / elapsed
                  for waits, elapsed in blocks[on]] for on in blocks}
    figures = s2_figures(
        [w for waits, _ in blocks[True] for w in waits],
        sum(elapsed for _, elapsed in blocks[True]))
    figures['without_rps'] = statistics.median(rates[False])
    figures['paired_ratio'] = statistics.median(
        on / off for on, off in zip(rates[True], rates[False]))
    # The process's CPU time per request (the collecting thread's too):
    # what the collector costs, less disturbed by other load than req/s.
    figures['cpu_us'] = statistics.median(cpu[True])
    figures['without_cpu_us'] = statistics.median(cpu[False])
    return figures


def _progress(ctx: Context, on: bool, pair: int, pairs: int,
              seconds: float) -> Callable[[float], None]:
    label = '%s %d/%d: ' % ('with' if on else 'without', pair, pairs)
    return lambda elapsed: ctx.progress('%s%.1f / %.1f s' % (
        label, min(elapsed, seconds), seconds))


#: The collected row's run, per scenario (S1 and S2 only).
PAIRED_RUNS = {'S1': run_s1_paired, 'S2': run_s2_paired}
