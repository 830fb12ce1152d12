"""What a metrics collector costs the pool: S1 and S2 of the benchmark with
and without a collector attached, on the same pool and connections.

    python tests/scripts/collector_overhead.py --collector otel
    python tests/scripts/collector_overhead.py --collector prometheus \\
        --url postgresql://postgres@127.0.0.1:5432/test --rounds 8

S1: one thread, connect / SELECT 1 / close (``--s1-ops`` per block, us per
op). S2: 16 threads on 4 connections (``--s2-seconds`` per block,
requests/s and checkout wait p99). Both also as the process's CPU time per
operation, which other load on a shared machine disturbs less than wall
time. Blocks without and with the collector alternate (ABBA), on one pool;
the figures are medians over ``--rounds``, the cost the median of each
round's with/without ratio.
"Without" is the pool with no listener at all; "with" has the collector's
listener attached and, with ``--collect-every`` > 0, a thread collecting
(a Prometheus scrape, an OpenTelemetry collection) that often inside the
timed block, so the collector's own work (for OpenTelemetry: recording
every buffered value into the SDK's histograms) is counted too. Between
blocks, and with ``--collect-every 0`` only there, the collector collects
outside the timing.
"""
import argparse
import statistics
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import urlparse

import playhouse_pool as pp
from playhouse_pool.events import events_of

SQL = 'SELECT 1'
S2_THREADS, S2_CONNECTIONS = 16, 4


def make_db(url: str, max_connections: int) -> Any:
    parsed = urlparse(url)
    if parsed.scheme.startswith('mysql'):
        cls, port, extra = pp.PooledMySQLDatabase, 3306, {
            'ssl_disabled': True}
    else:
        cls, port, extra = pp.PooledPostgresqlExtDatabase, 5432, {}
    return cls(parsed.path.lstrip('/'), host=parsed.hostname or '127.0.0.1',
               port=parsed.port or port, user=parsed.username,
               password=parsed.password or '',
               max_connections=max_connections, timeout=30, **extra)


class Collector:
    """One collector kind attached to ``db``: ``collect()`` does what a
    scrape or an export would."""

    def __init__(self, kind: str, db: Any) -> None:
        self.collects: List[Callable[[], Any]] = []
        self.seconds = 0.0           # spent collecting, inside blocks
        if kind in ('prometheus', 'both'):
            from prometheus_client import CollectorRegistry, generate_latest
            from playhouse_pool.prometheus import register
            registry = CollectorRegistry()
            register(db, registry=registry)
            self.collects.append(lambda: generate_latest(registry))
        if kind in ('otel', 'both'):
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import InMemoryMetricReader
            from playhouse_pool.otel import instrument
            reader = InMemoryMetricReader()
            instrument(db, meter_provider=MeterProvider(
                metric_readers=[reader]))
            self.collects.append(reader.get_metrics_data)
        events = events_of(db)
        self.events = events
        self.listeners = events.listeners     # the collector's listener
        events.listeners = ()

    def collect(self) -> None:
        for collect in self.collects:
            collect()

    def attached(self, on: bool) -> None:
        self.events.listeners = self.listeners if on else ()


class Collecting:
    """While the block runs, collect every ``every`` seconds (0: never)."""

    def __init__(self, collector: Collector, every: float) -> None:
        self.collector, self.every = collector, every
        self.stop = threading.Event()
        self.thread: Optional[threading.Thread] = None

    def __enter__(self) -> 'Collecting':
        if self.every > 0:
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()
        return self

    def _run(self) -> None:
        while not self.stop.wait(self.every):
            start = time.perf_counter()
            self.collector.collect()
            self.collector.seconds += time.perf_counter() - start

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()


def s1_block(db: Any, ops: int) -> float:
    connect, execute_sql, close = db.connect, db.execute_sql, db.close
    start = time.perf_counter()
    for _ in range(ops):
        connect()
        execute_sql(SQL).fetchone()
        close()
    return (time.perf_counter() - start) / ops * 1e6


def s2_block(db: Any, seconds: float) -> Tuple[float, float]:
    waits: List[List[float]] = [[] for _ in range(S2_THREADS)]
    window: Dict[str, float] = {}
    go = threading.Barrier(S2_THREADS, action=lambda: window.update(
        start=time.perf_counter(), end=time.perf_counter() + seconds))
    finished = [0.0] * S2_THREADS

    def worker(index: int) -> None:
        record = waits[index].append
        clock = time.perf_counter
        connect, execute_sql, close = db.connect, db.execute_sql, db.close
        go.wait()
        end = window['end']
        while True:
            start = clock()
            if start >= end:
                break
            connect()
            record(clock() - start)
            execute_sql(SQL).fetchone()
            close()
        finished[index] = clock()

    threads = [threading.Thread(target=worker, args=(i,))
               for i in range(S2_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = sorted(w for per in waits for w in per)
    p99 = every[min(len(every) - 1, int(0.99 * len(every)))]
    return len(every) / (max(finished) - window['start']), p99 * 1e3


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--url', default='postgresql://postgres@127.0.0.1'
                        ':5432/test')
    parser.add_argument('--collector', default='both',
                        choices=['prometheus', 'otel', 'both'])
    parser.add_argument('--scenario', default='both',
                        choices=['S1', 'S2', 'both'])
    parser.add_argument('--rounds', type=int, default=16)
    parser.add_argument('--s1-ops', type=int, default=2000)
    parser.add_argument('--s2-seconds', type=float, default=1.5)
    parser.add_argument('--collect-every', type=float, default=1.0,
                        help='seconds between collections inside a block '
                        '(0: only between blocks)')
    args = parser.parse_args(argv)

    results: Dict[Tuple[str, bool], List[float]] = {}
    for scenario, connections in (('S1', 1), ('S2', S2_CONNECTIONS)):
        if args.scenario not in (scenario, 'both'):
            continue
        db = make_db(args.url, connections)
        collector = Collector(args.collector, db)
        try:
            for i in range(args.rounds):
                # ABBA: each half of a pair sees the same drift.
                for on in ((False, True) if i % 2 == 0 else (True, False)):
                    collector.collect()          # outside the timing
                    collector.attached(on)
                    with Collecting(collector, args.collect_every if on
                                    else 0):
                        cpu = time.process_time()
                        if scenario == 'S1':
                            figures: Tuple[float, ...] = (
                                s1_block(db, args.s1_ops),)
                        else:
                            figures = s2_block(db, args.s2_seconds)
                        cpu = time.process_time() - cpu
                    for n, value in enumerate(figures):
                        results.setdefault((scenario + str(n), on),
                                           []).append(value)
                    ops = args.s1_ops if scenario == 'S1' else (
                        figures[0] * args.s2_seconds)
                    results.setdefault((scenario + 'cpu', on), []).append(
                        cpu / ops * 1e6)
                    collector.attached(False)
            collector.collect()
        finally:
            db.close_all()
        print('%s: collecting inside the blocks took %.3f s in all'
              % (scenario, collector.seconds), file=sys.stderr)

    print('collector %s, %d rounds, collect every %s s, %s'
          % (args.collector, args.rounds, args.collect_every, args.url))
    print('%-18s %10s %10s %14s' % ('median', 'without', 'with',
                                    'cost (paired)'))
    for key, label, higher_is_better, form in (
            ('S10', 'S1 us/op', False, '%10.1f'),
            ('S1cpu', 'S1 CPU us/op', False, '%10.1f'),
            ('S20', 'S2 requests/s', True, '%10.0f'),
            ('S2cpu', 'S2 CPU us/request', False, '%10.1f'),
            ('S21', 'S2 wait p99 ms', False, '%10.3f')):
        if (key, False) not in results:
            continue
        without, with_ = results[(key, False)], results[(key, True)]
        # Each round's two blocks ran back to back: their ratio is free of
        # the drift between rounds.
        costs = [(a / b if higher_is_better else b / a)
                 for a, b in zip(without, with_)]
        print(('%-18s ' + form + ' ' + form + ' %+13.1f%%') % (
            label, statistics.median(without), statistics.median(with_),
            (statistics.median(costs) - 1) * 100))
    print('cost: how much slower with the collector (median of the rounds\' '
          'with/without ratios; requests/s: without/with)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
