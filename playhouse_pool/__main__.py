"""``python -m playhouse_pool``: the benchmark (DESIGN.md, "The benchmark").

Runs four scenarios through this pool, peewee's own ``playhouse.pool`` and,
for a Postgres URL with psycopg_pool installed, psycopg_pool; prints a table
of figures, ratios and the targets (or JSON with ``--json``).

  S1  one thread: connect, SELECT 1, close; against a held connection
  S2  16 threads sharing 4 connections: throughput, checkout wait, fairness
  S3  16 threads that each need a new connection, 100 ms per connect
  S4  idle connections taken while other threads are mid-connect

S3 and S4 put a loopback proxy (``_proxy.LatencyProxy``) between the pool
and the server, so they need a networked database.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field, replace
from typing import (Any, Callable, Dict, Iterable, List, Optional, Protocol,
                    Sequence, TextIO, Tuple)
from urllib.parse import urlparse

import peewee
from playhouse import pool as peewee_pool
from playhouse.db_url import parse as parse_url

from . import __version__
from ._proxy import LatencyProxy
from ._redact import redact
from .backends import (PooledMySQLDatabase, PooledPostgresqlDatabase,
                       PooledSqliteDatabase)

try:
    import psycopg
    import psycopg_pool
except ImportError:                      # optional: Postgres comparison only
    psycopg = psycopg_pool = None  # type: ignore[assignment]

clock = time.perf_counter

OURS, PEEWEE, PSYCOPG = 'playhouse_pool', 'peewee', 'psycopg_pool'
SQL = 'SELECT 1'
CHECKOUT_TIMEOUT = 30.0     # "wait, don't fail": every checkout may wait
CONNECT_DELAY = 0.100       # what the proxy adds to each connect (S3, S4)
HUNG_AFTER = 60.0           # a scenario still running then is reported hung
S1_BUDGET = 1.5             # seconds of pooled ops in S1, at most
S1_BLOCK = 100              # S1 alternates floor and pool blocks of this
S2_THREADS, S2_CONNECTIONS = 16, 4
S3_THREADS = 16
S4_MAX, S4_IDLE, S4_OPENERS = 8, 4, 4
S4_HEAD_START = 0.020       # openers are this far into their connects

Figures = Dict[str, Any]
Query = Callable[[], None]


# -- Where to connect ---------------------------------------------------------

_KINDS = {'postgres': 'postgres', 'postgresql': 'postgres',
          'postgresext': 'postgres', 'postgresqlext': 'postgres',
          'mysql': 'mysql', 'sqlite': 'sqlite', 'sqliteext': 'sqlite'}
_DEFAULT_PORTS = {'postgres': 5432, 'mysql': 3306}


@dataclass(frozen=True)
class Target:
    """The database under test: its kind and peewee connect parameters."""
    url: str
    kind: str                       # 'postgres', 'mysql' or 'sqlite'
    database: str
    params: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_url(cls, url: str) -> Target:
        scheme = urlparse(url).scheme.split('+')[0]
        kind = _KINDS.get(scheme)
        if kind is None:
            raise ValueError('unsupported URL scheme %r (use postgresql://, '
                             'mysql:// or sqlite:///)' % scheme)
        params = parse_url(url.replace(scheme + '+pool://', scheme + '://'))
        database = params.pop('database')
        if kind == 'sqlite' and database in ('', ':memory:'):
            raise ValueError('a pooled SQLite database must be a file')
        return cls(url, kind, database, params)

    @property
    def networked(self) -> bool:
        return self.kind != 'sqlite'

    @property
    def address(self) -> Tuple[str, int]:
        return (self.params.get('host', '127.0.0.1'),
                int(self.params.get('port', _DEFAULT_PORTS[self.kind])))

    @property
    def pool_params(self) -> Dict[str, Any]:
        # Pooled SQLite connections move between threads.
        extra = {'check_same_thread': False} if self.kind == 'sqlite' else {}
        return {**self.params, **extra}

    def via(self, port: int) -> Target:
        """The same database, reached through a proxy on ``port``."""
        return replace(self, params={**self.params, 'host': '127.0.0.1',
                                     'port': port})

    def conninfo(self) -> str:
        names = {'host': 'host', 'port': 'port', 'user': 'user',
                 'password': 'password'}
        given = {names[k]: v for k, v in self.params.items() if k in names}
        return psycopg.conninfo.make_conninfo(dbname=self.database, **given)


# -- Pool adapters: the scenarios only see checkout/query/checkin/close -------

class Adapter(Protocol):
    def checkout(self) -> Any: ...
    def query(self, handle: Any) -> None: ...
    def checkin(self, handle: Any) -> None: ...
    def close(self) -> None: ...

    def cycle(self) -> Query:
        """One checkout, query and check-in as a user of the pool writes
        it, with nothing of the adapter's in between (S1 times this)."""
        ...

    def held(self, handle: Any) -> Query:
        """The same query on a connection checked out already (S1's
        floor), written the same way."""
        ...


class PeeweeAdapter:
    """A peewee-style pooled database: connect() checks out, close() in."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def checkout(self) -> None:
        self.db.connect()

    def query(self, handle: None) -> None:
        self.db.execute_sql(SQL).fetchone()

    def checkin(self, handle: None) -> None:
        self.db.close()

    def cycle(self) -> Query:
        connect, execute_sql, close = (self.db.connect, self.db.execute_sql,
                                       self.db.close)

        def op() -> None:
            connect()
            execute_sql(SQL).fetchone()
            close()
        return op

    def held(self, handle: None) -> Query:
        execute_sql = self.db.execute_sql

        def op() -> None:
            execute_sql(SQL).fetchone()
        return op

    def close(self) -> None:
        self.db.close_all()


class PsycopgPoolAdapter:
    """psycopg_pool through its own ``with pool.connection() as conn``."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def checkout(self) -> Tuple[Any, Any]:
        context = self.pool.connection(timeout=CHECKOUT_TIMEOUT)
        return context, context.__enter__()

    def query(self, handle: Tuple[Any, Any]) -> None:
        handle[1].execute(SQL).fetchone()

    def checkin(self, handle: Tuple[Any, Any]) -> None:
        handle[0].__exit__(None, None, None)

    def cycle(self) -> Query:
        connection = self.pool.connection

        def op() -> None:
            with connection(timeout=CHECKOUT_TIMEOUT) as conn:
                conn.execute(SQL).fetchone()
        return op

    def held(self, handle: Tuple[Any, Any]) -> Query:
        execute = handle[1].execute

        def op() -> None:
            execute(SQL).fetchone()
        return op

    def close(self) -> None:
        self.pool.close(timeout=5)


Builder = Callable[[Target, int, int], Adapter]   # max_connections, min_size


@dataclass(frozen=True)
class PoolSpec:
    name: str
    build: Builder


_PLAIN_CLASSES = {'postgres': peewee.PostgresqlDatabase,
                  'mysql': peewee.MySQLDatabase,
                  'sqlite': peewee.SqliteDatabase}
_OUR_CLASSES = {'postgres': PooledPostgresqlDatabase,
                'mysql': PooledMySQLDatabase, 'sqlite': PooledSqliteDatabase}
_PEEWEE_CLASSES = {'postgres': peewee_pool.PooledPostgresqlDatabase,
                   'mysql': peewee_pool.PooledMySQLDatabase,
                   'sqlite': peewee_pool.PooledSqliteDatabase}


def _peewee_style(classes: Dict[str, Any]) -> Builder:
    def build(target: Target, max_connections: int, min_size: int) -> Adapter:
        # min_size is psycopg_pool's: the scenarios pre-warm the others.
        db = classes[target.kind](target.database,
                                  max_connections=max_connections,
                                  timeout=CHECKOUT_TIMEOUT,
                                  **target.pool_params)
        return PeeweeAdapter(db)
    return build


def _build_psycopg_pool(target: Target, max_connections: int,
                        min_size: int) -> Adapter:
    # autocommit, as peewee's connections are: the same round trips per op.
    pool = psycopg_pool.ConnectionPool(
        target.conninfo(), min_size=min_size, max_size=max_connections,
        timeout=CHECKOUT_TIMEOUT, kwargs={'autocommit': True}, open=True)
    if min_size:
        pool.wait(timeout=CHECKOUT_TIMEOUT)
    return PsycopgPoolAdapter(pool)


def check_reachable(target: Target) -> None:
    """Connect once, plainly: a wrong URL fails here, at once, rather than
    in every scenario after the pools' connect retries."""
    db = _PLAIN_CLASSES[target.kind](target.database, **target.params)
    db.connect()
    db.close()


def pool_specs(target: Target) -> List[PoolSpec]:
    specs = [PoolSpec(OURS, _peewee_style(_OUR_CLASSES)),
             PoolSpec(PEEWEE, _peewee_style(_PEEWEE_CLASSES))]
    if target.kind == 'postgres' and psycopg_pool is not None:
        specs.append(PoolSpec(PSYCOPG, _build_psycopg_pool))
    return specs


# -- Threads ------------------------------------------------------------------

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


def _barrier(parties: int, action: Optional[Callable[[], None]] = None
             ) -> threading.Barrier:
    return threading.Barrier(parties, action, timeout=HUNG_AFTER)


def prewarm(adapter: Adapter, count: int) -> None:
    """Open ``count`` connections at once and return them: idle, ready."""
    all_held = _barrier(count)

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
        print('warning: closing the pool failed: %s' % _describe(exc),
              file=sys.stderr)


# -- Scenarios ----------------------------------------------------------------

@dataclass
class Context:
    target: Target
    iterations: int
    duration: float
    progress: Callable[[str], None]


def _time_loop(fn: Query, count: int) -> float:
    start = clock()
    for _ in range(count):
        fn()
    return clock() - start


def run_s1(ctx: Context, spec: PoolSpec) -> Figures:
    """One thread: checkout, SELECT 1, checkin; against the floor, the same
    query on the same connection held checked out.

    The floor shares the pool's connection because on a small VM one
    connection's round trip can be several times another's, depending on
    which CPU its server process happens to run on. Floor and pool blocks
    alternate, so drift hits both alike.
    """
    adapter = spec.build(ctx.target, 1, 1)
    try:
        pooled = adapter.cycle()
        per_op = _time_loop(pooled, 200) / 200  # also opens the connection
        rounds = max(min(ctx.iterations, int(S1_BUDGET / per_op))
                     // S1_BLOCK, 1)
        floor_times, pool_times = [], []
        for _ in range(rounds):
            floor_times.append(_held_loop(adapter, S1_BLOCK))
            pool_times.append(_time_loop(pooled, S1_BLOCK))
    finally:
        close_quietly(adapter)
    pool_us = statistics.median(pool_times) / S1_BLOCK * 1e6
    floor_us = statistics.median(floor_times) / S1_BLOCK * 1e6
    return {'us_per_op': pool_us, 'floor_us': floor_us,
            'overhead_us': pool_us - floor_us, 'ratio': pool_us / floor_us,
            'ops': rounds * S1_BLOCK}


def _held_loop(adapter: Adapter, count: int) -> float:
    """Seconds for ``count`` queries on one checked-out connection."""
    handle = adapter.checkout()
    try:
        return _time_loop(adapter.held(handle), count)
    finally:
        adapter.checkin(handle)


def run_s2(ctx: Context, spec: PoolSpec) -> Figures:
    """16 threads on 4 connections: throughput, waits and fairness."""
    adapter = spec.build(ctx.target, S2_CONNECTIONS, S2_CONNECTIONS)
    waits: List[List[float]] = [[] for _ in range(S2_THREADS)]
    finished = [0.0] * S2_THREADS
    window: Dict[str, float] = {}

    def open_window() -> None:
        window['start'] = clock()
        window['end'] = window['start'] + ctx.duration

    go = _barrier(S2_THREADS, open_window)

    def worker(index: int) -> None:
        record = waits[index].append
        checkout, query, checkin = (adapter.checkout, adapter.query,
                                    adapter.checkin)
        go.wait()
        end = window['end']
        while True:
            start = clock()
            if start >= end:
                break
            handle = checkout()
            record(clock() - start)
            query(handle)
            checkin(handle)
        finished[index] = clock()

    try:
        prewarm(adapter, S2_CONNECTIONS)
        workers: List[Callable[[], None]] = [
            functools.partial(worker, i) for i in range(S2_THREADS)]
        crew = Crew(workers, [go])
        crew.join(ctx.duration + HUNG_AFTER, _countdown(ctx))
    finally:
        close_quietly(adapter)
    return _s2_figures(waits, max(finished) - window['start'])


def _countdown(ctx: Context) -> Callable[[float], None]:
    return lambda elapsed: ctx.progress(
        '%.1f / %.0f s' % (min(elapsed, ctx.duration), ctx.duration))


def _s2_figures(waits: List[List[float]], elapsed: float) -> Figures:
    counts = [len(w) for w in waits]
    every = sorted(x for w in waits for x in w)
    fewest = min(counts)
    return {
        'rps': sum(counts) / elapsed,
        'wait_p50_ms': _percentile(every, 0.50) * 1e3,
        'wait_p99_ms': _percentile(every, 0.99) * 1e3,
        'wait_max_ms': every[-1] * 1e3 if every else math.nan,
        'fairness': max(counts) / fewest if fewest else math.inf,
        'requests': sum(counts),
    }


def _percentile(ordered: List[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered))
                                            - 1))]


def run_s3(ctx: Context, spec: PoolSpec) -> Figures:
    """16 threads, each needing a new connection that takes 100 ms."""
    with LatencyProxy(*ctx.target.address, CONNECT_DELAY) as proxy:
        adapter = spec.build(ctx.target.via(proxy.port), S3_THREADS, 0)
        served: List[float] = []
        started: List[float] = []
        go = _barrier(S3_THREADS, lambda: started.append(clock()))
        # Everyone keeps a connection until all are served, so each of the
        # 16 really needs its own.
        all_served = _barrier(S3_THREADS)

        def worker() -> None:
            go.wait()
            handle = adapter.checkout()
            try:
                adapter.query(handle)
                served.append(clock())
                all_served.wait()
            finally:
                adapter.checkin(handle)

        try:
            Crew([worker] * S3_THREADS, [go, all_served]).join(HUNG_AFTER)
        finally:
            close_quietly(adapter)
    return {'all_served_ms': (max(served) - started[0]) * 1e3}


def run_s4(ctx: Context, spec: PoolSpec) -> Figures:
    """Threads take idle connections while others are mid-connect.

    4 idle connections are opened and returned; 4 "hogs" check them out,
    so the 4 "openers" that start next must each open a new connection
    (100 ms through the proxy). 20 ms into those connects the hogs check
    theirs back in and 4 "takers" check out: their worst wait is the figure.
    """
    with LatencyProxy(*ctx.target.address, CONNECT_DELAY) as proxy:
        adapter = spec.build(ctx.target.via(proxy.port), S4_MAX, 0)
        hogs_ready = _barrier(S4_IDLE + 1)
        openers_go = _barrier(S4_OPENERS + 1)
        release = threading.Event()
        taker_waits: List[float] = []
        opener_waits: List[float] = []

        def hog() -> None:
            handle = adapter.checkout()
            hogs_ready.wait()
            release.wait(HUNG_AFTER)
            adapter.checkin(handle)

        def opener() -> None:
            openers_go.wait()
            _timed_use(adapter, opener_waits)

        def taker() -> None:
            release.wait(HUNG_AFTER)
            _timed_use(adapter, taker_waits)

        try:
            prewarm(adapter, S4_IDLE)
            crew = Crew([hog] * S4_IDLE + [opener] * S4_OPENERS
                        + [taker] * S4_IDLE, [hogs_ready, openers_go])
            try:
                hogs_ready.wait()
                openers_go.wait()
                time.sleep(S4_HEAD_START)
            except threading.BrokenBarrierError:
                pass                    # crew.join() raises the reason
            finally:
                release.set()
            crew.join(HUNG_AFTER)
        finally:
            close_quietly(adapter)
    return {'worst_wait_ms': max(taker_waits) * 1e3,
            'openers_ms': max(opener_waits) * 1e3}


def _timed_use(adapter: Adapter, waits: List[float]) -> None:
    start = clock()
    handle = adapter.checkout()
    waits.append(clock() - start)
    try:
        adapter.query(handle)
    finally:
        adapter.checkin(handle)


# -- What is reported ---------------------------------------------------------

@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    fmt: str
    compare: bool = True     # gets a "playhouse_pool / other" ratio


@dataclass(frozen=True)
class Check:
    """A target for our pool: ``metric`` (or ours / ``versus``'s) against
    ``limit``. Targets are set for Postgres."""
    text: str
    metric: str
    limit: float
    at_most: bool
    versus: Optional[str] = None

    def value(self, results: Dict[str, Figures]) -> Optional[float]:
        ours = results.get(OURS, {}).get(self.metric)
        if ours is None or self.versus is None:
            return ours
        theirs = results.get(self.versus, {}).get(self.metric)
        return ours / theirs if theirs else None

    def passed(self, value: float) -> bool:
        return value <= self.limit if self.at_most else value >= self.limit


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    run: Callable[[Context, PoolSpec], Figures]
    metrics: Tuple[Metric, ...]
    checks: Tuple[Check, ...]
    networked: bool = False
    note: str = ''
    psycopg_note: str = ''      # shown when psycopg_pool took part


SCENARIOS = (
    Scenario(
        'S1', 'one thread: connect, SELECT 1, close (vs a held connection)',
        run_s1,
        (Metric('us_per_op', 'us/op', '%.1f', compare=False),
         Metric('floor_us', 'floor us', '%.1f', compare=False),
         Metric('overhead_us', 'overhead', '%.1f'),
         Metric('ratio', 'x floor', '%.2f'),
         Metric('ops', 'ops', '%d', compare=False)),
        (Check('connect+query+close <= 1.15 x floor', 'ratio', 1.15, True),),
        note='floor: the same query on the same connection, held checked '
             'out; overhead: us/op - floor; medians over alternating blocks '
             'of %d ops. Compare pools by overhead and x floor: on a small '
             'VM the round trip itself varies with the CPU the server '
             'process runs on.' % S1_BLOCK),
    Scenario(
        'S2', '16 threads sharing 4 connections, {duration:g} s (waits in '
        'ms)',
        run_s2,
        (Metric('rps', 'req/s', '%.0f'),
         Metric('wait_p50_ms', 'wait p50', '%.3f'),
         Metric('wait_p99_ms', 'wait p99', '%.3f'),
         Metric('wait_max_ms', 'wait max', '%.2f'),
         Metric('fairness', 'most/fewest', '%.2f', compare=False)),
        (Check('req/s >= 2.5 x peewee', 'rps', 2.5, False, PEEWEE),
         Check('req/s >= 1.2 x psycopg_pool', 'rps', 1.2, False, PSYCOPG),
         Check('checkout wait p99 <= 2 ms', 'wait_p99_ms', 2.0, True),
         Check('fairness (most/fewest) <= 1.1', 'fairness', 1.1, True)),
        note='wait: time spent in checkout; most/fewest: requests of the '
             'busiest thread / of the least busy.',
        psycopg_note='psycopg_pool: min_size=max_size=4, autocommit '
                     'connections.'),
    Scenario(
        'S3', '16 threads each needing a new connection, +100 ms per connect',
        run_s3,
        (Metric('all_served_ms', 'all served ms', '%.0f'),),
        (Check('all 16 served <= 250 ms', 'all_served_ms', 250.0, True),),
        networked=True),
    Scenario(
        'S4', 'idle connections taken while 4 threads connect (+100 ms)',
        run_s4,
        (Metric('worst_wait_ms', 'worst wait ms', '%.2f'),
         Metric('openers_ms', 'openers ms', '%.0f', compare=False)),
        (Check('worst idle checkout wait <= 10 ms', 'worst_wait_ms', 10.0,
               True),),
        networked=True,
        note='worst wait: of the 4 threads taking connections checked in '
             'while 4 others are mid-connect; openers: slowest new '
             'connection.',
        psycopg_note='psycopg_pool hands returned connections to its '
                     'earliest waiters (the openers), and grows in the '
                     'background.'),
)


@dataclass
class Outcome:
    scenario: Scenario
    title: str
    skipped: Optional[str] = None
    results: Dict[str, Figures] = field(default_factory=dict)


def run_scenario(ctx: Context, scenario: Scenario, specs: List[PoolSpec],
                 repeat: int, progress: 'Progress') -> Outcome:
    outcome = Outcome(scenario, scenario.title.format(duration=ctx.duration))
    if scenario.networked and not ctx.target.networked:
        outcome.skipped = ('needs a networked database (it connects through '
                           'a loopback proxy); use --url')
        progress.done('%s skipped: %s' % (scenario.id, outcome.skipped))
        return outcome
    runs: Dict[str, List[Figures]] = {spec.name: [] for spec in specs}
    for attempt in range(repeat):
        for spec in specs:
            label = '%s %-14s %s' % (scenario.id, spec.name,
                                     '(%d/%d) ' % (attempt + 1, repeat)
                                     if repeat > 1 else '')
            progress.start(label + 'running')
            live = replace(ctx, progress=functools.partial(
                _prefixed, progress.update, label))
            figures = _attempt(scenario, live, spec)
            runs[spec.name].append(figures)
            progress.done(label + _summary(scenario, figures))
    outcome.results = {name: _median(figures)
                       for name, figures in runs.items()}
    return outcome


def _attempt(scenario: Scenario, ctx: Context, spec: PoolSpec) -> Figures:
    try:
        return scenario.run(ctx, spec)
    except Exception as exc:
        return {'error': _describe(exc)}


def _describe(exc: BaseException) -> str:
    text = ' '.join(str(exc).split())
    return '%s: %s' % (type(exc).__name__, redact(text)[:200])


def _median(runs: List[Figures]) -> Figures:
    errors = [run['error'] for run in runs if 'error' in run]
    if errors:
        return {'error': errors[0]}
    return {key: statistics.median(run[key] for run in runs)
            for key in runs[0]}


def _summary(scenario: Scenario, figures: Figures) -> str:
    if 'error' in figures:
        return 'ERROR ' + figures['error']
    return ', '.join('%s %s' % (m.label, m.fmt % figures[m.key])
                     for m in scenario.metrics)


# -- Output -------------------------------------------------------------------

class Progress:
    """Progress on stderr: one line rewritten in place on a terminal, plain
    lines otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()

    def start(self, text: str) -> None:
        if self.live:
            self.update(text)
        else:
            self._line(text)

    def update(self, text: str) -> None:
        if self.live:
            self.stream.write('\r\x1b[K' + text)
            self.stream.flush()

    def done(self, text: str) -> None:
        self._line(('\r\x1b[K' if self.live else '') + text)

    def _line(self, text: str) -> None:
        self.stream.write(text + '\n')
        self.stream.flush()


def render(target: Target, outcomes: List[Outcome], repeat: int) -> str:
    lines = ['playhouse_pool %s benchmark: %s (%s)' % (
        __version__, redact(target.url), target.kind),
        '%s; %s' % (_environment_line(), 'median of %d runs' % repeat
                    if repeat > 1 else '1 run')]
    for outcome in outcomes:
        lines.append('')
        lines.extend(_render_outcome(target, outcome))
    return '\n'.join(lines) + '\n'


def _environment_line() -> str:
    env = _environment()
    return ', '.join('%s %s' % (k, v) for k, v in env.items())


def _prefixed(show: Callable[[str], None], label: str, text: str) -> None:
    show(label + text)


def _environment() -> Dict[str, Any]:
    env: Dict[str, Any] = {'python': platform.python_version(),
                           'peewee': peewee.__version__,  # type: ignore[attr-defined]
                           'cpus': os.cpu_count()}
    if psycopg_pool is not None:
        env['psycopg_pool'] = psycopg_pool.__version__
    return env


def _render_outcome(target: Target, outcome: Outcome) -> List[str]:
    scenario = outcome.scenario
    lines = ['%s  %s' % (scenario.id, outcome.title)]
    if outcome.skipped:
        return lines + ['    skipped: ' + outcome.skipped]
    rows = [(name, figures, False)
            for name, figures in outcome.results.items()]
    rows += [('ours / %s' % name, ratios, True)
             for name, ratios in _ratios(outcome).items()]
    name_width = max(len(name) for name, _, _ in rows)
    widths = [max(len(m.label), 8) for m in scenario.metrics]
    lines.append('    %-*s' % (name_width, 'pool') + ''.join(
        '  %*s' % (w, m.label) for m, w in zip(scenario.metrics, widths)))
    for name, figures, ratio in rows:
        lines.append('    %-*s' % (name_width, name)
                     + _cells(scenario.metrics, widths, figures, ratio))
    lines.extend(_render_checks(target, outcome))
    note = scenario.note
    if PSYCOPG in outcome.results and scenario.psycopg_note:
        note = (note + ' ' + scenario.psycopg_note).strip()
    if note:
        lines.append(textwrap.fill(note, 79, initial_indent='    note: ',
                                   subsequent_indent=' ' * 10))
    return lines


def _cells(metrics: Sequence[Metric], widths: List[int], figures: Figures,
           ratio: bool) -> str:
    if 'error' in figures:
        return '  ERROR ' + figures['error']
    cells = []
    for metric, width in zip(metrics, widths):
        value = figures.get(metric.key)
        text = '' if value is None else (
            '%.2fx' % value if ratio else metric.fmt % value)
        cells.append('  %*s' % (width, text))
    return ''.join(cells).rstrip()


def _ratios(outcome: Outcome) -> Dict[str, Figures]:
    """Ours / each other pool, per comparable metric."""
    ours = outcome.results.get(OURS, {})
    if 'error' in ours:
        return {}
    ratios: Dict[str, Figures] = {}
    for name, theirs in outcome.results.items():
        if name == OURS or 'error' in theirs:
            continue
        ratios[name] = {m.key: _ratio(ours[m.key], theirs[m.key])
                        for m in outcome.scenario.metrics if m.compare}
    return ratios


def _ratio(ours: float, theirs: float) -> Optional[float]:
    return ours / theirs if theirs and math.isfinite(theirs) else None


def _check_rows(target: Target, outcome: Outcome
                ) -> List[Tuple[Check, Optional[float], Optional[bool]]]:
    """(check, value, passed); passed is None off Postgres or without a
    value (e.g. psycopg_pool absent)."""
    rows: List[Tuple[Check, Optional[float], Optional[bool]]] = []
    if outcome.skipped:
        return rows
    for check in outcome.scenario.checks:
        value = check.value(outcome.results)
        if check.versus and check.versus not in outcome.results:
            continue
        verdict = (check.passed(value) if value is not None
                   and target.kind == 'postgres' else None)
        rows.append((check, value, verdict))
    return rows


def _render_checks(target: Target, outcome: Outcome) -> List[str]:
    lines = []
    for check, value, verdict in _check_rows(target, outcome):
        shown = 'n/a' if value is None else _short(value)
        mark = ('PASS' if verdict else 'FAIL') if verdict is not None else (
            '(postgres target)' if value is not None else '')
        lines.append(('    target: %-36s %8s  %s' % (check.text, shown,
                                                      mark)).rstrip())
    return lines


def _short(value: float) -> str:
    return '%.0f' % value if abs(value) >= 100 else '%.2f' % value


def to_json(target: Target, outcomes: List[Outcome], repeat: int) -> str:
    scenarios = []
    for outcome in outcomes:
        scenarios.append({
            'id': outcome.scenario.id,
            'title': outcome.title,
            'skipped': outcome.skipped,
            'results': outcome.results,
            'ratios': {'%s/%s' % (OURS, name): ratios
                       for name, ratios in _ratios(outcome).items()},
            'targets': [{'target': check.text, 'value': value,
                         'limit': check.limit, 'pass': verdict}
                        for check, value, verdict
                        in _check_rows(target, outcome)],
        })
    report = {'benchmark': 'playhouse_pool', 'version': __version__,
              'url': redact(target.url), 'backend': target.kind,
              'repeat': repeat, 'environment': _environment(),
              'scenarios': scenarios}
    return json.dumps(_finite(report), indent=2)


def _finite(value: Any) -> Any:
    """JSON has no inf or nan: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# -- Command line -------------------------------------------------------------

def _scenario_ids(values: List[str]) -> List[Scenario]:
    wanted = {v.strip().upper() for value in values for v in value.split(',')
              if v.strip()}
    known = {s.id for s in SCENARIOS}
    unknown = wanted - known
    if unknown:
        raise argparse.ArgumentTypeError('unknown scenario(s): %s (choose '
                                         'from %s)' % (', '.join(sorted(
                                             unknown)), ', '.join(sorted(
                                                 known))))
    return [s for s in SCENARIOS if not wanted or s.id in wanted]


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='python -m playhouse_pool',
        description='Benchmark playhouse_pool against peewee\'s pool (and '
                    'psycopg_pool for Postgres URLs).')
    parser.add_argument('--url', help='database URL, e.g. postgresql://'
                        'postgres@127.0.0.1:5432/test or mysql://root@'
                        '127.0.0.1:3306/test (default: a SQLite file in a '
                        'temporary directory)')
    parser.add_argument('--json', action='store_true',
                        help='print only JSON on stdout')
    parser.add_argument('--scenario', action='append', default=[],
                        metavar='S1|S2|S3|S4',
                        help='run only these (repeatable or comma-separated)')
    parser.add_argument('--duration', type=_positive, default=3.0,
                        help='seconds S2 runs (default 3)')
    parser.add_argument('--iterations', type=_positive_int, default=5000,
                        help='S1 operations per pool, at most (default 5000)')
    parser.add_argument('--repeat', type=_positive_int, default=1,
                        help='run each scenario N times, report medians')
    args = parser.parse_args(argv)
    try:
        args.scenarios = _scenario_ids(args.scenario)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    return args


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError('must be > 0')
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError('must be >= 1')
    return value


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix='playhouse_pool-bench-') as tmp:
        url = args.url or 'sqlite:///%s' % os.path.join(tmp, 'bench.db')
        try:
            target = Target.from_url(url)
            check_reachable(target)
        except Exception as exc:
            print('error: %s' % _describe(exc), file=sys.stderr)
            return 2
        progress = Progress(sys.stderr)
        ctx = Context(target, args.iterations, args.duration,
                      progress.update)
        specs = pool_specs(target)
        try:
            outcomes = [run_scenario(ctx, scenario, specs, args.repeat,
                                     progress)
                        for scenario in args.scenarios]
        except KeyboardInterrupt:
            print('\ninterrupted', file=sys.stderr)
            return 130
    print(to_json(target, outcomes, args.repeat) if args.json
          else render(target, outcomes, args.repeat), end='' if not
          args.json else '\n')
    failed = any('error' in figures for outcome in outcomes
                 for figures in outcome.results.values())
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
