"""Many app processes, each with its own pool, behind one PgBouncer in
transaction pooling mode: processes x max_connections client connections
share PgBouncer's few server connections to Postgres.

Four processes (tests/scripts/pgbouncer_app.py), each with a pool of 8
(``timeout=30``) and 8 threads x 50 requests (connect, a transaction that
inserts a row, a count, close; some transactions and savepoints roll back),
through psycopg2 and psycopg 3 (``prepare_threshold=None``). Meanwhile a
thread samples how many server connections Postgres sees for PgBouncer's
database and what PgBouncer reports. Everything committed must be there,
nothing rolled back, and the server side must never exceed PgBouncer's pool
size while the app side holds 32 client connections.
"""
import json
import os
import subprocess
import sys
import threading
from contextlib import closing
from typing import Any, Dict, List

import pytest

from pgbouncer import pgbouncer_fixture  # noqa: F401  (pgbouncer)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'tests', 'scripts', 'pgbouncer_app.py')
PROCESSES = 4
THREADS = 8             # threads per process = its pool's max_connections
REQUESTS = 50           # per thread
ROLLED_BACK = sum(1 for seq in range(REQUESTS) if seq % 10 == 9)
COMMITTED = REQUESTS - ROLLED_BACK
SAMPLE_INTERVAL = 0.002


class Sampler(threading.Thread):
    """Measures, every few milliseconds until stopped: server connections
    to PgBouncer's database as Postgres sees them, and PgBouncer's own
    client and server counts (SHOW POOLS)."""

    def __init__(self, bouncer: Any) -> None:
        super().__init__(daemon=True)
        self.bouncer = bouncer
        self.stopped = threading.Event()
        self.samples = 0
        self.max_server = 0         # pg_stat_activity
        self.max_bouncer_server = 0  # SHOW POOLS sv_*
        self.max_clients = 0        # SHOW POOLS cl_active + cl_waiting
        self.max_waiting = 0        # SHOW POOLS cl_waiting
        self.error: Any = None

    def run(self) -> None:
        try:
            with closing(self.bouncer.connect_postgres()) as pg, \
                    closing(self.bouncer.connect_console()) as console:
                while True:
                    self.sample(pg, console)
                    if self.stopped.wait(SAMPLE_INTERVAL):
                        break
                self.sample(pg, console)
        except Exception as exc:
            self.error = exc

    def sample(self, pg: Any, console: Any) -> None:
        server = self.bouncer.server_connections(pg)
        pool = self.bouncer.pool(console)
        self.samples += 1
        self.max_server = max(self.max_server, server)
        if pool:
            self.max_bouncer_server = max(self.max_bouncer_server, sum(
                pool[k] for k in ('sv_active', 'sv_idle', 'sv_used',
                                  'sv_tested', 'sv_login')))
            self.max_clients = max(self.max_clients,
                                   pool['cl_active'] + pool['cl_waiting'])
            self.max_waiting = max(self.max_waiting, pool['cl_waiting'])

    def stop(self) -> None:
        self.stopped.set()
        self.join(10)
        assert not self.is_alive(), 'sampler did not stop'
        if self.error is not None:
            raise self.error


def _fail(proc: Any, what: str, out: str = '') -> None:
    proc.kill()
    more, err = proc.communicate(timeout=10)
    pytest.fail('app process %s\n--- stdout ---\n%s%s\n--- stderr ---\n%s'
                % (what, out, more, err))


@pytest.mark.timeout(90)
@pytest.mark.parametrize('driver', ['psycopg2', 'psycopg3'])
def test_app_processes_share_pgbouncer_transaction_pool(pgbouncer, driver):
    pytest.importorskip(driver if driver == 'psycopg2' else 'psycopg')
    bouncer = pgbouncer
    table = 'pp_rows_%s' % driver
    with closing(bouncer.connect()) as conn, conn.cursor() as cursor:
        cursor.execute('CREATE TABLE %s (id serial PRIMARY KEY, app int, '
                       'thread int, seq int, kind varchar(255))' % table)

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT] + sys.path))
    sampler = Sampler(bouncer)
    sampler.start()
    procs: List[Any] = []
    try:
        for app in range(PROCESSES):
            procs.append(subprocess.Popen(
                [sys.executable, SCRIPT, driver, bouncer.host,
                 str(bouncer.port), bouncer.dbname, bouncer.user, table,
                 str(app), str(THREADS), str(REQUESTS)],
                env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True))

        # Every app holds all its client connections at once.
        for proc in procs:
            line = proc.stdout.readline()
            if not line.startswith('ready '):
                _fail(proc, 'did not get ready', line)
            assert json.loads(line[6:])['in_use'] == THREADS
        with closing(bouncer.connect_console()) as console, \
                closing(bouncer.connect_postgres()) as pg:
            at_ready = bouncer.pool(console)
            server_at_ready = bouncer.server_connections(pg)
        assert at_ready['cl_active'] + at_ready['cl_waiting'] == \
            PROCESSES * THREADS
        assert server_at_ready <= bouncer.pool_size

        for proc in procs:
            proc.stdin.write('go\n')
            proc.stdin.flush()
        results: List[Dict[str, Any]] = []
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            if proc.returncode != 0:
                _fail(proc, 'exited with %s' % proc.returncode, out + err)
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        sampler.stop()

    # Every app: no errors, every request done, its own pool within bounds.
    for result in results:
        assert result['errors'] == []
        assert result['committed'] == THREADS * COMMITTED
        assert result['rolled_back'] == THREADS * ROLLED_BACK
        assert result['moved_in_transaction'] == 0
        stats = result['pool_stats']
        assert stats['created'] <= THREADS and stats['open'] <= THREADS
        assert stats['timeouts'] == 0 and stats['reclaimed'] == 0
    app_connections = sum(r['pool_stats']['created'] for r in results)
    app_open = sum(r['pool_stats']['open'] for r in results)
    backends = set().union(*(r['backends'] for r in results))

    # What committed is there, exactly once; nothing rolled back is.
    with closing(bouncer.connect_postgres(bouncer.dbname)) as pg, \
            pg.cursor() as cursor:
        cursor.execute("SELECT count(*), count(DISTINCT (app, thread, seq)) "
                       "FROM %s WHERE kind = 'committed'" % table)
        assert cursor.fetchone() == (PROCESSES * THREADS * COMMITTED,) * 2
        cursor.execute("SELECT kind, count(*) FROM %s "
                       "WHERE kind <> 'committed' GROUP BY kind" % table)
        assert cursor.fetchall() == []

    # The point: 32 client connections, never more than pool_size servers.
    assert app_connections == PROCESSES * THREADS
    assert sampler.samples >= 10
    assert 1 <= sampler.max_server <= bouncer.pool_size
    assert sampler.max_bouncer_server <= bouncer.pool_size
    assert sampler.max_clients == PROCESSES * THREADS
    assert len(backends) <= bouncer.pool_size
    print('\n[pgbouncer %s] app processes: %d, app-side connections opened: '
          '%d (open at end: %d), max client connections at PgBouncer: %d '
          '(max waiting: %d), max server connections seen: %d (PgBouncer: '
          '%d), distinct server backends used: %d, pool size: %d, '
          'samples: %d, rows committed: %d'
          % (driver, PROCESSES, app_connections, app_open,
             sampler.max_clients, sampler.max_waiting, sampler.max_server,
             sampler.max_bouncer_server, len(backends), bouncer.pool_size,
             sampler.samples, PROCESSES * THREADS * COMMITTED))
