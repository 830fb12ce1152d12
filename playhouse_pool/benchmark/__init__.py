"""The benchmark (docs/design.rst, "The benchmark"):
``python -m playhouse_pool``.

Runs the scenarios through this pool, a lean reference pool, peewee's own
``playhouse.pool`` and, for a Postgres URL with psycopg_pool installed,
psycopg_pool (and, with ``--baseline``, a second copy of playhouse_pool);
prints a table of figures, ratios and targets, or JSON.

  S1  one thread: connect, SELECT 1, close; against a held connection
  S2  16 threads sharing 4 connections: throughput, checkout wait, fairness
  S3  16 threads that each need a new connection, 100 ms per connect
  S4  growth: 3 busy threads while 4 others hold connections 0.4 s
  S5  ageing: 8 threads on 8 connections, stale_timeout=2, 6.5 s
  S6  warm minimum: min_connections=4, a burst of 4 after 0.8 s
  S7  keepalive: bytes a checkout sends after idling past ping_after

With ``--asyncio``, instead, through the asyncio pools (ours, a lean
asyncio reference, peewee 4's ``playhouse.pwasyncio`` as shipped and, for
Postgres, psycopg_pool's ``AsyncConnectionPool`` and a bare
``asyncpg.Pool``):

  A1  contention: 64 tasks sharing 4 connections
  A2  cancellation storm: 300 requests, about half cancelled, then what
      the pool has left
  A3  ageing: 8 tasks on 8 connections, stale_timeout=1, 4 s

Modules, one job each: ``scenarios`` (how each scenario runs and what it
measures), ``catalog`` (what each reports, the targets), ``pools`` (the
pools under test behind one adapter interface, and loading a baseline),
``collectors`` (``--collector``: ours with a metrics collector, measured
paired), ``lean`` (the lean reference), ``crew`` (worker
threads), ``proxy`` (the loopback proxy adding connect latency, counting
bytes), ``target`` (the database URL), ``report`` (progress, table, JSON),
``cli`` (arguments, running); for ``--asyncio``: ``aio_catalog`` (what A1-A3
report, the targets), ``aio_scenarios`` (how A1 and A3 run, the tasks they
share), ``aio_storm`` (A2 and the server's count), ``aio_pools`` (the
asyncio pools, where ours plugs in), ``aio_lean`` (the lean asyncio
reference).
"""
