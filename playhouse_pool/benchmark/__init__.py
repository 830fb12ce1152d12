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

Modules, one job each: ``scenarios`` (how each scenario runs and what it
measures), ``catalog`` (what each reports, the targets), ``pools`` (the
pools under test behind one adapter interface, and loading a baseline),
``collectors`` (``--collector``: ours with a metrics collector, measured
paired), ``lean`` (the lean reference), ``crew`` (worker
threads), ``proxy`` (the loopback proxy adding connect latency, counting
bytes), ``target`` (the database URL), ``report`` (progress, table, JSON),
``cli`` (arguments, running).
"""
