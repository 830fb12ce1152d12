"""What each asyncio scenario (``--asyncio``) reports and the targets set
for our asyncio face (issue 20), in ``catalog.py``'s terms. How each runs:
``aio_scenarios.py`` (A1, A3) and ``aio_storm.py`` (A2).

Where ``playhouse_pool.asyncio`` cannot be imported (peewee 4 before 4.3),
the row "playhouse_pool" and its targets read "n/a" with the reason: the
peers' rows are measured, the targets wait for ours.
"""
from __future__ import annotations

from typing import Tuple

from .aio_pools import STOCK, AioPoolSpec
from .aio_scenarios import (A1_CONNECTIONS, A1_TASKS, A3_PAUSE, A3_SECONDS,
                            A3_SLOW, A3_STALE, A3_TASKS, run_ageing,
                            run_contention)
from .aio_storm import (A2_AFTER_KILL, A2_CANCEL_SHARE, A2_CONNECTIONS,
                        A2_NEXT, A2_TASKS, A2_TIMEOUT, run_storm)
from .catalog import Check, Metric, Scenario
from .pools import LEAN

ASYNC_SCENARIOS: Tuple[Scenario[AioPoolSpec], ...] = (
    Scenario(
        'A1', 'contention: %d tasks sharing %d connections, {duration:g} s '
        '(waits in ms)' % (A1_TASKS, A1_CONNECTIONS),
        run_contention,
        (Metric('rps', 'req/s', '%.0f', higher_is_better=True),
         Metric('wait_p50_ms', 'wait p50', '%.3f'),
         Metric('wait_p99_ms', 'wait p99', '%.3f'),
         Metric('wait_max_ms', 'wait max', '%.2f'),
         Metric('fairness', 'most/fewest', '%.2f', compare=False)),
        (Check('req/s >= 1.5 x pwasyncio', 'rps', 1.5, False, STOCK),
         Check('req/s >= 0.9 x lean', 'rps', 0.9, False, LEAN),
         Check('checkout wait p99 <= 0.35 x pwasyncio', 'wait_p99_ms', 0.35,
               True, STOCK),
         Check('fairness (most/fewest) <= 1.05', 'fairness', 1.05, True)),
        with_lean=True,
        note='each task loops: check out (pwasyncio rows: aconnect()), '
             'SELECT 1, check in (aclose()); wait: time in checkout; '
             'most/fewest: requests of the busiest task / of the least '
             'busy; %d connections opened before the clock starts. lean: '
             'the least a FIFO pool under pwasyncio can cost '
             '(benchmark/aio_lean.py). pwasyncio: peewee\'s own, on its '
             'driver\'s pool.' % A1_CONNECTIONS,
        psycopg_note='psycopg_pool: AsyncConnectionPool, min_size=max_size='
                     '%d, autocommit; asyncpg: a bare asyncpg.Pool, '
                     'acquire(), fetchval(), release().' % A1_CONNECTIONS),
    Scenario(
        'A2', 'cancellation storm: %d requests on %d connections, about '
        '%d%% cancelled' % (A2_TASKS, A2_CONNECTIONS, A2_CANCEL_SHARE * 100),
        run_storm,
        (Metric('cancelled', 'cancelled', '%d', compare=False),
         Metric('swallowed', 'swallowed', '%d', compare=False),
         Metric('failed', 'failed', '%d', compare=False),
         Metric('lost', 'lost', '%d', compare=False),
         Metric('in_use', 'in use', '%d', compare=False),
         Metric('pool', 'pool', '%d', compare=False),
         Metric('server', 'server', '%d', compare=False),
         Metric('next_ok', 'next OK', '%d', compare=False),
         Metric('killed_failed', 'killed: failed', '%d', compare=False)),
        (Check('no connection lost', 'lost', 0, True, everywhere=True),
         Check('none in use after', 'in_use', 0, True, everywhere=True),
         Check('pool count == server count', 'count_gap', 0, True,
               everywhere=True),
         Check('the next %d requests all succeed' % A2_NEXT, 'next_ok',
               A2_NEXT, False, everywhere=True),
         Check('every connection killed: the next %d requests all '
               'succeed' % A2_AFTER_KILL, 'killed_failed', 0, True,
               everywhere=True)),
        with_lean=True,
        worst_of=tuple((key, max) for key in (
            'swallowed', 'failed', 'stuck', 'lost', 'in_use', 'count_gap',
            'killed_failed'))
        + (('next_ok', min),),
        note='each request: check out, SELECT 1, check in (on an error, '
             'with it); the ones cancelled have their point drawn (waiting, '
             'mid-query, during check-in: at_waiting, at_query, at_release '
             'in --json), the cancel landing there or up to 2 ms later. '
             'swallowed: cancelled, yet ended as if not (the cancel never '
             'reached the task); failed: requests not cancelled that '
             'failed; lost: %d less the '
             'most requests served at once afterwards; in use, pool: the '
             'pool\'s counts once settled; server: the server\'s count of '
             'the pool\'s connections (SQLite: aiosqlite threads); next OK: '
             'of %d requests at once after. Checkout timeout %g s. Over '
             'repeated runs: the worst of swallowed, failed, lost, in use, '
             'the gap between pool and server, next OK, killed: failed; the '
             'median of the others. lean checks only the driver\'s closed '
             'flag, at check-in: what it hands on after a cancelled query '
             'is whatever else the driver left. killed: failed: then every '
             'connection of the pool is killed server-side and, once the '
             'server has ended them, %d requests at once: how many fail '
             '(not on SQLite).'
             % (A2_CONNECTIONS, A2_NEXT, A2_TIMEOUT, A2_AFTER_KILL)),
    Scenario(
        'A3', 'ageing: %d tasks, %d connections, stale_timeout=%g, %g s '
        '(+100 ms connects)' % (A3_TASKS, A3_TASKS, A3_STALE, A3_SECONDS),
        run_ageing,
        (Metric('slow', '> %g ms' % (A3_SLOW * 1e3), '%d', compare=False),
         Metric('worst_ms', 'worst ms', '%.1f'),
         Metric('checkouts', 'checkouts', '%d', compare=False)),
        (Check('no checkout over %g ms' % (A3_SLOW * 1e3), 'slow', 0, True,
               everywhere=True),),
        networked=True, with_lean=True,
        note='max_connections=min_connections=%d, all opened first (so '
             'they age together); each task: check out, SELECT 1, check in, '
             '%g ms pause. > %g ms: checkouts slower than that. Only ours '
             'and psycopg_pool (max_lifetime) age connections: lean, '
             'pwasyncio and asyncpg keep theirs (the floor).'
             % (A3_TASKS, A3_PAUSE * 1e3, A3_SLOW * 1e3)),
)
