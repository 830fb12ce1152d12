"""What each scenario reports and the targets set for our pool: the
table of scenarios (``SCENARIOS``), their metrics and checks. How each one
runs is in ``scenarios.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

from .pools import COLLECTED, LEAN, OURS, PEEWEE, PSYCOPG, PoolSpec
from .scenarios import (Context, Figures, S1_BLOCK, S4_BUSY, S4_HOLD,
                        S4_HOLDERS, S4_LEAD, S4_MAX, S4_PAUSE, S4_STAGGER,
                        S5_PAUSE, S5_SECONDS, S5_SLOW, S5_STALE, S5_THREADS,
                        S6_BURST, S6_LATER, S6_MAX, S6_MIN, S7_IDLE,
                        S7_PING_AFTER, S7_ROUNDS, run_s1, run_s2, run_s3,
                        run_s4, run_s5, run_s6, run_s7)

__all__ = ['Check', 'Context', 'Figures', 'Metric', 'SCENARIOS', 'Scenario']


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    fmt: str
    compare: bool = True     # gets a "playhouse_pool / other" ratio
    higher_is_better: bool = False


@dataclass(frozen=True)
class Check:
    """A target for our pool, set for Postgres.

    Without ``versus``: our ``metric`` against ``limit``. With ``versus``
    and no ``floor``: ours / ``versus``'s against ``limit``. With both:
    our figure against max(``floor``, ``limit`` x ``versus``'s figure).
    "Ours" is ``subject``'s figure: our pool's unless another row of ours
    is checked (``ours+collector`` against ``playhouse_pool``). A check of
    a row that did not run is left out.
    """
    text: str
    metric: str
    limit: float
    at_most: bool
    versus: Optional[str] = None
    floor: Optional[float] = None
    subject: str = OURS         # whose figure is checked

    def evaluate(self, results: Dict[str, Figures]
                 ) -> Optional[Tuple[Optional[float], float]]:
        """(value, limit); None if ``versus`` did not run; value None if a
        figure is missing (an error)."""
        if self.subject not in results or (
                self.versus is not None and self.versus not in results):
            return None
        ours = _figure(results, self.subject, self.metric)
        if self.versus is None:
            return ours, self.limit
        theirs = _figure(results, self.versus, self.metric)
        if self.floor is not None:
            limit = (self.floor if theirs is None
                     else max(self.floor, self.limit * theirs))
            return (ours if theirs is not None else None), limit
        value = ours / theirs if ours is not None and theirs else None
        return value, self.limit

    def passed(self, value: float, limit: float) -> bool:
        return value <= limit if self.at_most else value >= limit


def _figure(results: Dict[str, Figures], pool: str, key: str
            ) -> Optional[float]:
    return results.get(pool, {}).get(key)


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    run: Callable[[Context, PoolSpec], Figures]
    metrics: Tuple[Metric, ...]
    checks: Tuple[Check, ...]
    networked: bool = False
    with_lean: bool = False     # the lean reference takes part
    note: str = ''
    psycopg_note: str = ''      # shown when psycopg_pool took part
    sqlite_note: str = ''       # shown when peewee's pool ran on SQLite


SCENARIOS = (
    Scenario(
        'S1', 'one thread: connect, SELECT 1, close (vs a held connection)',
        run_s1,
        (Metric('us_per_op', 'us/op', '%.1f'),
         Metric('floor_us', 'floor us', '%.1f', compare=False),
         Metric('overhead_us', 'overhead', '%.1f'),
         Metric('ratio', 'x floor', '%.2f'),
         Metric('ops', 'ops', '%d', compare=False)),
        (Check('per op <= 1.10 x lean (each vs its floor)', 'ratio', 1.10,
               True, LEAN),
         Check('with a collector: per op <= 1.05 x without (paired)',
               'paired_ratio', 1.05, True, subject=COLLECTED)),
        with_lean=True,
        note='floor: the same query on the same connection, held checked '
             'out; overhead: us/op - floor; medians over alternating blocks '
             'of %d ops. Compare pools by overhead and x floor: on a small '
             'VM the round trip itself varies with the CPU the server '
             'process runs on (so the target compares x floor). lean: the '
             'least a FIFO pool on peewee can cost (benchmark/lean.py).'
             % S1_BLOCK),
    Scenario(
        'S2', '16 threads sharing 4 connections, {duration:g} s (waits in '
        'ms)',
        run_s2,
        (Metric('rps', 'req/s', '%.0f', higher_is_better=True),
         Metric('wait_p50_ms', 'wait p50', '%.3f'),
         Metric('wait_p99_ms', 'wait p99', '%.3f'),
         Metric('wait_max_ms', 'wait max', '%.2f'),
         Metric('fairness', 'most/fewest', '%.2f', compare=False)),
        (Check('req/s >= 0.9 x lean', 'rps', 0.9, False, LEAN),
         Check('req/s >= 2.5 x peewee', 'rps', 2.5, False, PEEWEE),
         Check('req/s >= 1.2 x psycopg_pool', 'rps', 1.2, False, PSYCOPG),
         Check('checkout wait p99 <= 0.8 x psycopg_pool', 'wait_p99_ms', 0.8,
               True, PSYCOPG),
         Check('fairness (most/fewest) <= 1.1', 'fairness', 1.1, True),
         Check('with a collector: req/s >= 0.95 x without (paired)',
               'paired_ratio', 0.95, False, subject=COLLECTED)),
        with_lean=True,
        note='wait: time spent in checkout; most/fewest: requests of the '
             'busiest thread / of the least busy; 4 connections opened '
             'before the clock starts.',
        psycopg_note='psycopg_pool: min_size=max_size=4, autocommit '
                     'connections.',
        sqlite_note='peewee on SQLite: a thread that checks its connection '
                    'in can take it straight back at its next checkout, '
                    'ahead of the threads waiting for one (woken, they '
                    'still have to race for it), so a few threads do most '
                    'of the work with no thread switch: hence its low p50 '
                    'and p99, while other threads wait for most of the run '
                    '(wait max) and most/fewest runs far above 1. Ours, like '
                    'the lean reference, hands each returned connection to '
                    'the thread that waited longest: a thread switch per '
                    'request, which SQLite\'s microsecond queries do not '
                    'hide.'),
    Scenario(
        'S3', '16 threads each needing a new connection, +100 ms per connect',
        run_s3,
        (Metric('all_served_ms', 'all served ms', '%.0f'),),
        (Check('all 16 served <= 250 ms', 'all_served_ms', 250.0, True),),
        networked=True),
    Scenario(
        'S4', 'growth: 3 busy threads, 4 others hold one %g s each (+100 '
        'ms connects)' % S4_HOLD,
        run_s4,
        (Metric('worst_ms', 'worst ms', '%.2f'),
         Metric('p99_ms', 'p99 ms', '%.2f'),
         Metric('holders_ms', 'holders ms', '%.0f', compare=False),
         Metric('checkouts', 'checkouts', '%d', compare=False)),
        (Check('worst <= max(15 ms, 1.5 x psycopg_pool)', 'worst_ms', 1.5,
               True, PSYCOPG, floor=15.0),),
        networked=True,
        note='max_connections=%d, min_connections=%d; %d connections opened '
             'first for the %d busy threads (check out, SELECT 1, check in, '
             '%g ms pause), so only the %d holders make the pool grow (each '
             'checks out once and holds it %g s; they start %g s apart, the '
             'first %g s after the busy threads). worst, p99: checkouts of '
             'the busy threads; holders: the slowest holder checkout.'
             % (S4_MAX, S4_BUSY, S4_BUSY, S4_BUSY, S4_PAUSE * 1e3,
                S4_HOLDERS, S4_HOLD, S4_STAGGER, S4_LEAD),
        psycopg_note='psycopg_pool: min_size=%d, max_size=%d.'
                     % (S4_BUSY, S4_MAX)),
    Scenario(
        'S5', 'ageing: 8 threads, 8 connections, stale_timeout=%g, %g s '
        '(+100 ms connects)' % (S5_STALE, S5_SECONDS),
        run_s5,
        (Metric('slow', '> %g ms' % (S5_SLOW * 1e3), '%d', compare=False),
         Metric('worst_ms', 'worst ms', '%.1f'),
         Metric('checkouts', 'checkouts', '%d', compare=False)),
        (Check('no checkout over %g ms' % (S5_SLOW * 1e3), 'slow', 0, True),),
        networked=True,
        note='max_connections=min_connections=%d, all opened first (so '
             'they age together); each thread: check out, SELECT 1, check '
             'in, %g ms pause. > %g ms: checkouts slower than that.'
             % (S5_THREADS, S5_PAUSE * 1e3, S5_SLOW * 1e3),
        psycopg_note='psycopg_pool: min_size=max_size=%d, max_lifetime=%g.'
                     % (S5_THREADS, S5_STALE)),
    Scenario(
        'S6', 'warm minimum: min_connections=%d, burst of %d %g s later (+100 '
        'ms connects)' % (S6_MIN, S6_BURST, S6_LATER),
        run_s6,
        (Metric('worst_ms', 'worst ms', '%.2f'),
         Metric('first_ms', 'first ms', '%.0f', compare=False)),
        (Check('worst <= max(10 ms, 1.5 x psycopg_pool)', 'worst_ms', 1.5,
               True, PSYCOPG, floor=10.0),),
        networked=True,
        note='max_connections=%d; worst: the slowest of the %d checkouts '
             'of the burst (each keeps its connection until all have one); '
             'first: the first checkout of the fresh pool. peewee\'s pool '
             'has no min_connections: it runs without.'
             % (S6_MAX, S6_BURST),
        psycopg_note='psycopg_pool: min_size=%d, max_size=%d.'
                     % (S6_MIN, S6_MAX)),
    Scenario(
        'S7', 'keepalive: bytes a checkout sends after %g s idle '
        '(ping_after=%g s)' % (S7_IDLE, S7_PING_AFTER),
        run_s7,
        (Metric('bytes', 'bytes', '%d', compare=False),
         Metric('worst_ms', 'worst ms', '%.2f')),
        (Check('checkout after idle sends 0 bytes', 'bytes', 0, True),),
        networked=True,
        note='bytes: forwarded client -> server by the proxy during the '
             'checkout call, the most of %d rounds (idle %g s, check out, '
             'SELECT 1, check in) on one connection; worst: the slowest of '
             'those checkouts. ping_after is ours; peewee\'s pool runs with '
             'its defaults (no keepalive setting).'
             % (S7_ROUNDS, S7_IDLE),
        psycopg_note='psycopg_pool: its defaults (no check callback), '
                     'min_size=max_size=1.'),
)
