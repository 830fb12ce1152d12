"""The asyncio scenarios (``--asyncio``; docs/design.rst, "The benchmark"): how
A1 (contention) and A3 (ageing) run, and what every one of them shares;
the cancellation storm (A2) is in ``aio_storm.py``. What each reports and
the targets are in ``aio_catalog.py``.

Each ``run_*`` runs one pool on an event loop of its own
(``asyncio.run``): built from its ``AioPoolSpec`` with the scenario's
``AioSettings``, driven through the pool-neutral ``AsyncAdapter``, closed.
A3 puts the loopback proxy adding ``CONNECT_DELAY`` to each connect between
the pool and the server, as S5 does for threads.
"""
from __future__ import annotations

import asyncio
import sys
from typing import (Any, Callable, Coroutine, Dict, Iterable, List, Optional,
                    Tuple)

from . import scenarios
from .aio_pools import AioPoolSpec, AioSettings, AsyncAdapter
from .crew import HUNG_AFTER, ScenarioHung, clock, describe
from .proxy import LatencyProxy
from .scenarios import Context, Figures, s2_figures

A1_TASKS, A1_CONNECTIONS = 64, 4
A3_TASKS = 8
A3_SECONDS = 4.0
A3_STALE = 1.0              # stale_timeout; psycopg_pool's max_lifetime
A3_SLOW = 0.050             # a checkout slower than this counts as slow
A3_PAUSE = 0.001
TICK = 0.25                 # progress display, seconds


# -- What every scenario shares -----------------------------------------------

async def serve(adapter: AsyncAdapter) -> None:
    """One request as a user writes it: check out, query, check in (with
    the error, if the query failed or was cancelled)."""
    await timed_serve(adapter)


async def timed_serve(adapter: AsyncAdapter) -> float:
    """``serve``; returns how long the checkout took."""
    start = clock()
    handle = await adapter.checkout()
    waited = clock() - start
    try:
        await adapter.query(handle)
    except BaseException as exc:
        await adapter.checkin(handle, exc)
        raise
    await adapter.checkin(handle, None)
    return waited


async def run_tasks(coros: Iterable[Coroutine[Any, Any, None]],
                    timeout: float,
                    tick: Optional[Callable[[float], None]] = None) -> None:
    """Run ``coros`` as tasks until all are done; the first error cancels
    the others and is raised; past ``timeout``, ScenarioHung."""
    tasks = [asyncio.ensure_future(coro) for coro in coros]
    pending = set(tasks)
    start = clock()
    try:
        while pending:
            left = timeout - (clock() - start)
            if left <= 0:
                raise ScenarioHung('%d of %d tasks still running after '
                                   '%.0f s' % (len(pending), len(tasks),
                                               timeout))
            done, pending = await asyncio.wait(
                pending, timeout=min(left, TICK),
                return_when=asyncio.FIRST_EXCEPTION)
            if tick is not None:
                tick(clock() - start)
            for task in done:
                error = None if task.cancelled() else task.exception()
                if error is not None:
                    raise error
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


async def prewarm(adapter: AsyncAdapter, count: int) -> None:
    """Open ``count`` connections at once and return them: idle, ready."""
    held: List[Any] = []
    all_held = asyncio.Event()

    async def hold() -> None:
        handle = await adapter.checkout()
        held.append(handle)
        if len(held) == count:
            all_held.set()
        try:
            await all_held.wait()
        finally:
            await adapter.checkin(handle, None)

    await run_tasks((hold() for _ in range(count)), HUNG_AFTER)


async def close_quietly(adapter: AsyncAdapter) -> None:
    """Close the pool, but never let a stuck pool stop the benchmark."""
    try:
        await asyncio.wait_for(adapter.close(), 10.0)
    except Exception as exc:
        print('warning: closing the pool failed: %s' % describe(exc),
              file=sys.stderr)


AsyncScenario = Callable[[Context, AioPoolSpec],
                         Coroutine[Any, Any, Figures]]


def on_own_loop(scenario: AsyncScenario
                ) -> Callable[[Context, AioPoolSpec], Figures]:
    """A scenario run on an event loop of its own per pool: a pool belongs
    to the loop it was first used on."""
    def run(ctx: Context, spec: AioPoolSpec) -> Figures:
        return asyncio.run(scenario(ctx, spec))
    run.__name__ = run.__qualname__ = scenario.__name__
    run.__doc__ = scenario.__doc__
    return run


def countdown(ctx: Context, seconds: float) -> Callable[[float], None]:
    return lambda elapsed: ctx.progress(
        '%.1f / %.1f s' % (min(elapsed, seconds), seconds))


# -- A1: contention -----------------------------------------------------------

async def _contention(ctx: Context, spec: AioPoolSpec) -> Figures:
    """64 tasks on 4 connections for the duration: each loops checkout,
    SELECT 1, check-in. Throughput, checkout waits and fairness, as S2."""
    adapter = spec.build(ctx.target, AioSettings(A1_CONNECTIONS,
                                                 A1_CONNECTIONS))
    try:
        await adapter.open()
        await prewarm(adapter, A1_CONNECTIONS)
        waits, elapsed = await contention_block(
            adapter, ctx.duration, countdown(ctx, ctx.duration))
    finally:
        await close_quietly(adapter)
    return s2_figures(waits, elapsed)


async def contention_block(adapter: AsyncAdapter, seconds: float,
                           tick: Callable[[float], None]
                           ) -> Tuple[List[List[float]], float]:
    """(each task's checkout waits, seconds from the start until the last
    task finished)."""
    waits: List[List[float]] = [[] for _ in range(A1_TASKS)]
    finished = [0.0] * A1_TASKS
    go = asyncio.Event()
    window: Dict[str, float] = {}

    async def worker(index: int) -> None:
        record = waits[index].append
        checkout, query, checkin = (adapter.checkout, adapter.query,
                                    adapter.checkin)
        await go.wait()
        end = window['end']
        while True:
            start = clock()
            if start >= end:
                break
            handle = await checkout()
            record(clock() - start)
            try:
                await query(handle)
            except BaseException as exc:
                await checkin(handle, exc)
                raise
            await checkin(handle, None)
        finished[index] = clock()

    async def start() -> None:
        await asyncio.sleep(0)          # every worker waits on ``go``
        window['start'] = clock()
        window['end'] = window['start'] + seconds
        go.set()

    await run_tasks([start()] + [worker(i) for i in range(A1_TASKS)],
                    seconds + HUNG_AFTER, tick)
    return waits, max(finished) - window['start']


run_contention = on_own_loop(_contention)


# -- A3: ageing ---------------------------------------------------------------

async def _ageing(ctx: Context, spec: AioPoolSpec) -> Figures:
    """8 tasks on 8 warm connections with a 1 s stale_timeout, 4 s
    through the +100 ms proxy: how many checkouts took over 50 ms."""
    with LatencyProxy(*ctx.target.address,
                      scenarios.CONNECT_DELAY) as proxy:
        adapter = spec.build(ctx.target.via(proxy.port),
                             AioSettings(A3_TASKS, A3_TASKS,
                                         stale_timeout=A3_STALE))
        waits: List[float] = []
        try:
            await adapter.open()
            await prewarm(adapter, A3_TASKS)
            end = clock() + A3_SECONDS

            async def worker() -> None:
                while clock() < end:
                    waits.append(await timed_serve(adapter))
                    await asyncio.sleep(A3_PAUSE)

            await run_tasks((worker() for _ in range(A3_TASKS)),
                            A3_SECONDS + HUNG_AFTER,
                            countdown(ctx, A3_SECONDS))
        finally:
            await close_quietly(adapter)
    return {'slow': sum(w > A3_SLOW for w in waits),
            'worst_ms': max(waits) * 1e3, 'checkouts': len(waits)}


run_ageing = on_own_loop(_ageing)
