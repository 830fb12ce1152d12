"""The scenarios (docs/design.rst, "The benchmark"): how each one runs.
What each reports and the targets set for our pool are in ``catalog.py``.

Each ``run_*`` builds one pool from its ``PoolSpec`` with the scenario's
``Settings``, drives it through the pool-neutral ``Adapter`` and returns
its figures. S3-S7 put a loopback proxy adding ``CONNECT_DELAY`` to each
connect between the pool and the server, so they need a networked database.
"""
from __future__ import annotations

import functools
import math
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Tuple

from .crew import HUNG_AFTER, Crew, barrier, clock, close_quietly, prewarm
from .pools import Adapter, PoolSpec, Query, Settings
from .proxy import LatencyProxy
from .target import Target

Figures = Dict[str, Any]

CONNECT_DELAY = 0.100       # what the proxy adds to each connect (S3-S7)
S1_BUDGET = 1.5             # seconds of pooled ops in S1, at most
S1_BLOCK = 100              # S1 alternates floor and pool blocks of this
S2_THREADS, S2_CONNECTIONS = 16, 4
S3_THREADS = 16
S4_MAX, S4_BUSY, S4_HOLDERS = 8, 3, 4
S4_HOLD = 0.4               # each holder keeps its connection this long
S4_STAGGER = 0.1            # holders start this far apart
S4_PAUSE = 0.001            # busy threads pause this between checkouts
S4_LEAD = 0.05              # busy threads run alone this long first
S4_TAIL = 0.1               # and go on this long after the holders are done
S5_THREADS = 8
S5_SECONDS = 6.5
S5_STALE = 2.0              # stale_timeout; psycopg_pool's max_lifetime
S5_SLOW = 0.050             # a checkout slower than this counts as slow
S5_PAUSE = 0.001
S6_MIN, S6_MAX, S6_BURST = 4, 8, 4
S6_LATER = 0.8              # the burst comes this long after one checkout
S7_PING_AFTER = 0.2
S7_IDLE = 0.5               # idle past ping_after, then check out
S7_ROUNDS = 3
S7_SETTLE = 0.02            # for the proxy to forward what was sent


@dataclass
class Context:
    target: Target
    iterations: int
    duration: float
    progress: Callable[[str], None]


def time_loop(fn: Query, count: int) -> float:
    start = clock()
    for _ in range(count):
        fn()
    return clock() - start


def _timed_checkout(adapter: Adapter) -> Tuple[Any, float]:
    start = clock()
    handle = adapter.checkout()
    return handle, clock() - start


def _countdown(ctx: Context, seconds: float) -> Callable[[float], None]:
    return lambda elapsed: ctx.progress(
        '%.1f / %.1f s' % (min(elapsed, seconds), seconds))


def _percentile(ordered: List[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered))
                                            - 1))]


# -- S1: one thread -----------------------------------------------------------

def run_s1(ctx: Context, spec: PoolSpec) -> Figures:
    """One thread: checkout, SELECT 1, checkin; against the floor, the same
    query on the same connection held checked out.

    The floor shares the pool's connection because on a small VM one
    connection's round trip can be several times another's, depending on
    which CPU its server process happens to run on. Floor and pool blocks
    alternate, so drift hits both alike.
    """
    adapter = spec.build(ctx.target, Settings(1, 1))
    try:
        pooled = adapter.cycle()
        floor_times, pool_times = [], []
        for _ in range(s1_rounds(ctx, pooled)):
            floor_times.append(held_loop(adapter, S1_BLOCK))
            pool_times.append(time_loop(pooled, S1_BLOCK))
    finally:
        close_quietly(adapter)
    return s1_figures(pool_times, floor_times)


def s1_rounds(ctx: Context, pooled: Query) -> int:
    """How many rounds of ``S1_BLOCK`` ops fit S1's budget, from 200 ops
    of ``pooled`` (which also open the connection)."""
    per_op = time_loop(pooled, 200) / 200
    return max(min(ctx.iterations, int(S1_BUDGET / per_op)) // S1_BLOCK, 1)


def s1_figures(pool_times: List[float], floor_times: List[float]
               ) -> Figures:
    """S1's figures from the seconds each block of pooled ops and of the
    floor took."""
    pool_us = statistics.median(pool_times) / S1_BLOCK * 1e6
    floor_us = statistics.median(floor_times) / S1_BLOCK * 1e6
    return {'us_per_op': pool_us, 'floor_us': floor_us,
            'overhead_us': pool_us - floor_us, 'ratio': pool_us / floor_us,
            'ops': len(pool_times) * S1_BLOCK}


def held_loop(adapter: Adapter, count: int) -> float:
    """Seconds for ``count`` queries on one checked-out connection."""
    handle = adapter.checkout()
    try:
        return time_loop(adapter.held(handle), count)
    finally:
        adapter.checkin(handle)


# -- S2: 16 threads on 4 connections ------------------------------------------

def run_s2(ctx: Context, spec: PoolSpec) -> Figures:
    """16 threads on 4 connections: throughput, waits and fairness."""
    adapter = spec.build(ctx.target, Settings(S2_CONNECTIONS,
                                              S2_CONNECTIONS))
    try:
        prewarm(adapter, S2_CONNECTIONS)
        waits, elapsed = s2_block(adapter, ctx.duration,
                                  _countdown(ctx, ctx.duration))
    finally:
        close_quietly(adapter)
    return s2_figures(waits, elapsed)


def s2_block(adapter: Adapter, seconds: float,
             progress: Callable[[float], None]
             ) -> Tuple[List[List[float]], float]:
    """16 threads loop checkout, query, checkin for ``seconds``: (each
    thread's checkout waits, seconds from the start until the last one
    finished)."""
    waits: List[List[float]] = [[] for _ in range(S2_THREADS)]
    finished = [0.0] * S2_THREADS
    window: Dict[str, float] = {}

    def open_window() -> None:
        window['start'] = clock()
        window['end'] = window['start'] + seconds

    go = barrier(S2_THREADS, open_window)

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

    workers: List[Callable[[], None]] = [
        functools.partial(worker, i) for i in range(S2_THREADS)]
    Crew(workers, [go]).join(seconds + HUNG_AFTER, progress)
    return waits, max(finished) - window['start']


def s2_figures(waits: List[List[float]], elapsed: float) -> Figures:
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


# -- S3: 16 cold threads ------------------------------------------------------

def run_s3(ctx: Context, spec: PoolSpec) -> Figures:
    """16 threads, each needing a new connection that takes 100 ms."""
    with LatencyProxy(*ctx.target.address, CONNECT_DELAY) as proxy:
        adapter = spec.build(ctx.target.via(proxy.port),
                             Settings(S3_THREADS))
        served: List[float] = []
        started: List[float] = []
        go = barrier(S3_THREADS, lambda: started.append(clock()))
        # Everyone keeps a connection until all are served, so each of the
        # 16 really needs its own.
        all_served = barrier(S3_THREADS)

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


# -- S4: growth ---------------------------------------------------------------

def run_s4(ctx: Context, spec: PoolSpec) -> Figures:
    """Growth: 3 busy threads loop checkout, query, checkin, 1 ms pause on
    3 warm connections; 4 holders, 0.1 s apart, then take one each for
    0.4 s, so the pool must grow (+100 ms per connect). Each holder leaves
    the busy threads one connection short until the pool has grown, and a
    busy thread that finds none idle could have the one another returns a
    millisecond later: the busy threads' worst checkout is the figure."""
    with LatencyProxy(*ctx.target.address, CONNECT_DELAY) as proxy:
        adapter = spec.build(ctx.target.via(proxy.port),
                             Settings(S4_MAX, S4_BUSY))
        holders_go = barrier(S4_HOLDERS + 1)
        holders_done = barrier(S4_HOLDERS + 1)
        stop = threading.Event()
        busy_waits: List[float] = []
        holder_waits: List[float] = []

        def busy() -> None:
            while not stop.is_set():
                handle, waited = _timed_checkout(adapter)
                busy_waits.append(waited)
                try:
                    adapter.query(handle)
                finally:
                    adapter.checkin(handle)
                time.sleep(S4_PAUSE)

        def holder(index: int) -> None:
            holders_go.wait()
            time.sleep(index * S4_STAGGER)
            handle, waited = _timed_checkout(adapter)
            holder_waits.append(waited)
            try:
                adapter.query(handle)
                time.sleep(S4_HOLD)
            finally:
                adapter.checkin(handle)
            holders_done.wait()

        try:
            prewarm(adapter, S4_BUSY)
            crew = Crew([busy] * S4_BUSY
                        + [functools.partial(holder, i)
                           for i in range(S4_HOLDERS)],
                        [holders_go, holders_done])
            try:
                time.sleep(S4_LEAD)
                holders_go.wait()
                holders_done.wait()
                time.sleep(S4_TAIL)
            except threading.BrokenBarrierError:
                pass                    # crew.join() raises the reason
            finally:
                stop.set()
            crew.join(HUNG_AFTER)
        finally:
            close_quietly(adapter)
    return {'worst_ms': max(busy_waits) * 1e3,
            'p99_ms': _percentile(sorted(busy_waits), 0.99) * 1e3,
            'holders_ms': max(holder_waits) * 1e3,
            'checkouts': len(busy_waits)}


# -- S5: ageing ---------------------------------------------------------------

def run_s5(ctx: Context, spec: PoolSpec) -> Figures:
    """Ageing: 8 threads on 8 warm connections with a 2 s stale_timeout,
    6.5 s through the +100 ms proxy: how many checkouts took over 50 ms."""
    with LatencyProxy(*ctx.target.address, CONNECT_DELAY) as proxy:
        adapter = spec.build(
            ctx.target.via(proxy.port),
            Settings(S5_THREADS, S5_THREADS, stale_timeout=S5_STALE))
        waits: List[float] = []
        window: Dict[str, float] = {}

        def open_window() -> None:
            window['end'] = clock() + S5_SECONDS

        go = barrier(S5_THREADS, open_window)

        def worker() -> None:
            go.wait()
            end = window['end']
            while clock() < end:
                handle, waited = _timed_checkout(adapter)
                waits.append(waited)
                try:
                    adapter.query(handle)
                finally:
                    adapter.checkin(handle)
                time.sleep(S5_PAUSE)

        try:
            prewarm(adapter, S5_THREADS)
            Crew([worker] * S5_THREADS, [go]).join(
                S5_SECONDS + HUNG_AFTER, _countdown(ctx, S5_SECONDS))
        finally:
            close_quietly(adapter)
    return {'slow': sum(w > S5_SLOW for w in waits),
            'worst_ms': max(waits) * 1e3, 'checkouts': len(waits)}


# -- S6: warm minimum ---------------------------------------------------------

def run_s6(ctx: Context, spec: PoolSpec) -> Figures:
    """Warm minimum: min_connections=4; one checkout, then 0.8 s later 4
    threads at once, each keeping its connection until all 4 have one."""
    with LatencyProxy(*ctx.target.address, CONNECT_DELAY) as proxy:
        adapter = spec.build(ctx.target.via(proxy.port),
                             Settings(S6_MAX, S6_MIN))
        waits: List[float] = []
        go, all_served = barrier(S6_BURST), barrier(S6_BURST)

        def worker() -> None:
            go.wait()
            handle, waited = _timed_checkout(adapter)
            waits.append(waited)
            try:
                adapter.query(handle)
                all_served.wait()
            finally:
                adapter.checkin(handle)

        try:
            handle, first = _timed_checkout(adapter)
            try:
                adapter.query(handle)
            finally:
                adapter.checkin(handle)
            time.sleep(S6_LATER)
            Crew([worker] * S6_BURST, [go, all_served]).join(HUNG_AFTER)
        finally:
            close_quietly(adapter)
    return {'worst_ms': max(waits) * 1e3, 'first_ms': first * 1e3}


# -- S7: keepalive ------------------------------------------------------------

def run_s7(ctx: Context, spec: PoolSpec) -> Figures:
    """Keepalive: the bytes a checkout sends to the server after its
    connection sat idle past ping_after (ours: 0.2 s, idle 0.5 s; the other
    pools with their defaults). The most of 3 rounds."""
    with LatencyProxy(*ctx.target.address, CONNECT_DELAY) as proxy:
        adapter = spec.build(ctx.target.via(proxy.port),
                             Settings(1, 1, ping_after=S7_PING_AFTER))
        sent: List[int] = []
        waits: List[float] = []
        try:
            prewarm(adapter, 1)
            for _ in range(S7_ROUNDS):
                time.sleep(S7_IDLE)
                before = proxy.bytes_to_server
                handle, waited = _timed_checkout(adapter)
                try:
                    # A round trip's bytes are counted before its answer
                    # comes; the pause lets the proxy read anything the
                    # checkout wrote without waiting for an answer.
                    time.sleep(S7_SETTLE)
                    sent.append(proxy.bytes_to_server - before)
                    waits.append(waited)
                    adapter.query(handle)
                finally:
                    adapter.checkin(handle)
        finally:
            close_quietly(adapter)
    return {'bytes': max(sent), 'worst_ms': max(waits) * 1e3}
