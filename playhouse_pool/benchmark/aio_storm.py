"""A2, the cancellation storm: 300 requests at once on 4 connections, about
half of them cancelled, each at a point drawn for it (waiting for a
connection, mid-query, during the check-in); then what the pool has left.

Each request to be cancelled has its point drawn up front, and the cancel
is scheduled when the request reaches it (at once, or up to ``A2_JITTER``
later); the point it actually lands in is counted (a cancel scheduled for
a check-in that completes without suspending lands nowhere). ``swallowed``:
requests that were cancelled but ended as if they had not been (their
``CancelledError`` never reached them). Then, once the pool has settled
(nothing checked out, or ``A2_SETTLE`` passed):

- ``in_use``: connections the pool counts as checked out (none should be);
- ``pool`` / ``server``: open connections by the pool's count and by the
  server's (Postgres: ``pg_stat_activity`` by ``application_name``; MySQL:
  the process list, by the database of the pool's own that the scenario
  creates; SQLite: aiosqlite's worker threads alive, one per open
  connection, beyond those alive before);
- ``lost``: connections the pool can no longer serve: 4 less the most
  requests it serves at once (each holds its connection until all 4 have
  one, or ``A2_LOST_WAIT``);
- ``next_ok``: of the next 200 requests, at once, how many succeed;
- ``killed_failed`` (servers only): every connection of the pool is then
  killed server-side (``pg_terminate_backend``, ``KILL``) and, once the
  server has ended them (the loop running meanwhile, as an application's
  does), ``A2_AFTER_KILL`` requests at once: how many fail.
"""
from __future__ import annotations

import asyncio
import random
import sys
import threading
import uuid
from collections import Counter
from typing import Any, Callable, List, Optional

import peewee

from .aio_pools import AioPoolSpec, AioSettings, AsyncAdapter
from .aio_scenarios import close_quietly, on_own_loop, prewarm, serve
from .crew import HUNG_AFTER, clock, describe
from .scenarios import Context, Figures
from .target import PLAIN_CLASSES, Target

A2_TASKS, A2_CONNECTIONS = 300, 4
A2_CANCEL_SHARE = 0.5       # of the requests, this share is cancelled
A2_JITTER = 0.002           # a cancel lands up to this long after its point
A2_TIMEOUT = 5.0            # each checkout's timeout (asyncpg and the like)
A2_SETTLE = 2.0             # seconds, at most, for the pool to settle
A2_LOST_WAIT = 2.0          # a checkout of the "lost" count waits this long
A2_NEXT = 200
A2_AFTER_KILL = 8
A2_SEED = 20                # the same draws for every pool
POINTS = ('waiting', 'query', 'release')


class ServerView:
    """The server's count of the connections tagged ``tag``, read through
    a plain (synchronous) peewee connection of the target's own."""

    def __init__(self, target: Target, tag: str) -> None:
        self.kind = target.kind
        self.tag = tag
        self._db: Optional[peewee.Database] = None
        self._threads_before = 0
        if self.kind == 'sqlite':
            self._threads_before = _sqlite_threads()
            return
        self._db = PLAIN_CLASSES[target.kind](target.database,
                                              **target.params)
        if self.kind == 'mysql':
            self._db.execute_sql('CREATE DATABASE %s' % tag)

    def count(self) -> int:
        if self._db is None:
            return _sqlite_threads() - self._threads_before
        if self.kind == 'postgres':
            sql = ('SELECT count(*) FROM pg_stat_activity '
                   'WHERE application_name = %s')
        else:
            sql = ('SELECT count(*) FROM information_schema.PROCESSLIST '
                   'WHERE DB = %s')
        return int(self._db.execute_sql(sql, (self.tag,)).fetchone()[0])

    def kill_all(self) -> bool:
        """Terminate every connection tagged ``tag`` server-side; False if
        there is no server (SQLite)."""
        if self._db is None:
            return False
        if self.kind == 'postgres':
            self._db.execute_sql(
                'SELECT pg_terminate_backend(pid) FROM pg_stat_activity '
                'WHERE application_name = %s', (self.tag,))
            return True
        ids = self._db.execute_sql(
            'SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s',
            (self.tag,)).fetchall()
        for (conn_id,) in ids:
            self._db.execute_sql('KILL %s' % int(conn_id))
        return True

    def close(self) -> None:
        if self._db is None:
            return
        try:
            if self.kind == 'mysql':
                self._db.execute_sql('DROP DATABASE IF EXISTS %s' % self.tag)
        finally:
            self._db.close()


def _sqlite_threads() -> int:
    # aiosqlite runs each connection on a thread of its own until the
    # connection is closed; Thread keeps its target while it runs.
    return sum(getattr(getattr(thread, '_target', None), '__name__', '')
               == '_connection_worker_thread'
               for thread in threading.enumerate())


async def _storm(ctx: Context, spec: AioPoolSpec) -> Figures:
    """The storm, then what the pool has left (the module's docstring)."""
    tag = 'pp_bench_%s' % uuid.uuid4().hex[:10]
    view = ServerView(ctx.target, tag)
    try:
        adapter = spec.build(ctx.target, AioSettings(
            A2_CONNECTIONS, A2_CONNECTIONS, timeout=A2_TIMEOUT, tag=tag))
        try:
            await adapter.open()
            await prewarm(adapter, A2_CONNECTIONS)
            ctx.progress('storm')
            figures = await storm(adapter, random.Random(A2_SEED),
                                  spec.name)
            ctx.progress('settling')
            figures.update(await _settle(adapter, view))
            ctx.progress('most served at once')
            figures['lost'] = A2_CONNECTIONS - await most_at_once(adapter)
            ctx.progress('the next %d requests' % A2_NEXT)
            figures['next_ok'] = await next_requests(adapter)
            if view.kill_all():
                ctx.progress('every connection killed')
                figures['killed_failed'] = await after_kill(adapter, view)
        finally:
            await close_quietly(adapter)
    finally:
        view.close()
    return figures


async def storm(adapter: AsyncAdapter, rng: random.Random,
                name: str) -> Figures:
    """300 requests at once, about half cancelled: how many were, where,
    how many ended as if they had not been, how many others failed or
    never ended."""
    loop = asyncio.get_running_loop()
    plan = [rng.choice(POINTS) if rng.random() < A2_CANCEL_SHARE else None
            for _ in range(A2_TASKS)]
    delays = [rng.choice((0.0, rng.uniform(0.0, A2_JITTER)))
              for _ in range(A2_TASKS)]
    where = [''] * A2_TASKS
    landed: Counter[str] = Counter()
    hit = [False] * A2_TASKS
    tasks: List[asyncio.Task[None]] = []

    def cancel(index: int) -> None:
        if not tasks[index].done():
            landed[where[index]] += 1
            hit[index] = True
            tasks[index].cancel()

    def reach(index: int, point: str) -> None:
        where[index] = point
        if plan[index] == point:
            loop.call_later(delays[index], cancel, index)

    async def request(index: int) -> None:
        reach(index, 'waiting')
        handle = await adapter.checkout()
        reach(index, 'query')
        try:
            await adapter.query(handle)
        except BaseException as exc:
            reach(index, 'release')
            await adapter.checkin(handle, exc)
            raise
        reach(index, 'release')
        await adapter.checkin(handle, None)
        where[index] = 'done'

    tasks.extend(loop.create_task(request(i)) for i in range(A2_TASKS))
    done, pending = await asyncio.wait(tasks, timeout=A2_TIMEOUT
                                       + HUNG_AFTER)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    ended = [(index, task.exception()) for index, task in enumerate(tasks)
             if task in done and not task.cancelled()]
    failed = [exc for _, exc in ended if exc is not None]
    if failed:
        print('note: A2 %s: %d requests failed, e.g. %s'
              % (name, len(failed), describe(failed[0])), file=sys.stderr)
    return {'cancelled': sum(task.cancelled() for task in done),
            # Cancelled, yet ended as if they had not been.
            'swallowed': sum(hit[index] and exc is None
                             for index, exc in ended),
            'at_waiting': landed['waiting'], 'at_query': landed['query'],
            'at_release': landed['release'], 'failed': len(failed),
            'stuck': len(pending)}


async def _settle(adapter: AsyncAdapter, view: ServerView) -> Figures:
    """Wait (up to A2_SETTLE) for nothing to be checked out and the two
    counts to agree; then the pool's and the server's counts."""
    deadline = clock() + A2_SETTLE
    while True:
        counts, server = adapter.counts(), view.count()
        if ((counts['in_use'] == 0 and counts['open'] == server)
                or clock() >= deadline):
            break
        await asyncio.sleep(0.02)
    return {'in_use': counts['in_use'], 'pool': counts['open'],
            'server': server, 'count_gap': abs(counts['open'] - server)}


async def most_at_once(adapter: AsyncAdapter) -> int:
    """The most connections the pool serves at once: 4 requests each hold
    theirs until all 4 have one, or A2_LOST_WAIT passed; then those still
    waiting for one are cancelled. (Each checks out in its own task, as
    pwasyncio's connections belong to the task that checked them out: no
    ``wait_for`` around a checkout, whose inner task would end holding
    it.)"""
    held: List[Any] = []
    all_held, release = asyncio.Event(), asyncio.Event()
    holding = [False] * A2_CONNECTIONS

    async def hold(index: int) -> None:
        handle = await adapter.checkout()
        holding[index] = True
        held.append(handle)
        if len(held) == A2_CONNECTIONS:
            all_held.set()
        try:
            await release.wait()
        finally:
            await adapter.checkin(handle, None)

    tasks = [asyncio.ensure_future(hold(i)) for i in range(A2_CONNECTIONS)]
    try:
        await asyncio.wait_for(all_held.wait(), A2_LOST_WAIT)
    except asyncio.TimeoutError:
        pass
    count = len(held)
    for index, task in enumerate(tasks):
        if not holding[index]:
            task.cancel()
    release.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return count


async def next_requests(adapter: AsyncAdapter) -> int:
    """Of ``A2_NEXT`` requests at once, how many succeed (those not done
    by the checkout timeout and then some count as failed)."""
    tasks = [asyncio.ensure_future(serve(adapter)) for _ in range(A2_NEXT)]
    done, pending = await asyncio.wait(tasks, timeout=A2_TIMEOUT + 5.0)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return sum(not task.cancelled() and task.exception() is None
               for task in done)


async def after_kill(adapter: AsyncAdapter, view: ServerView) -> int:
    """Once the server has ended the connections killed (up to
    A2_SETTLE), ``A2_AFTER_KILL`` requests at once: how many fail."""
    deadline = clock() + A2_SETTLE
    while view.count() and clock() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.02)     # the loop reads the last goodbyes
    results = await asyncio.gather(
        *(asyncio.wait_for(serve(adapter), A2_TIMEOUT + 5.0)
          for _ in range(A2_AFTER_KILL)), return_exceptions=True)
    return sum(isinstance(result, BaseException) for result in results)


run_storm: Callable[[Context, AioPoolSpec], Figures] = on_own_loop(_storm)
