"""One app process behind PgBouncer, for tests/test_pgbouncer.py.

Usage: pgbouncer_app.py DRIVER HOST PORT DBNAME USER TABLE APP THREADS REQUESTS

DRIVER is ``psycopg2`` (PooledPostgresqlDatabase) or ``psycopg3``
(PooledPsycopg3Database with ``prepare_threshold=None``: PgBouncer's
transaction pooling cannot keep a prepared statement on one server
connection). Its own pool: ``max_connections=THREADS``, ``timeout=30``.

Protocol, so that the test can look at PgBouncer while every app holds all
its client connections at once: every thread checks a connection out; then
the process prints ``ready`` and waits for a line on stdin; then every
thread runs REQUESTS requests, each its own checkout: connect, a
transaction, a count, close. Every tenth request's transaction is rolled
back, every tenth (other) one rolls back a savepoint and commits the rest.
At the end it prints one JSON line: counts, errors, ``pool_stats()``.
"""
import json
import sys
import threading
from typing import Any, Dict, List, Set

from peewee import CharField, IntegerField, Model

import playhouse_pool as pp

driver, host, port, dbname, user, table = sys.argv[1:7]
app, threads, requests = (int(arg) for arg in sys.argv[7:10])

options: Dict[str, Any] = dict(host=host, port=int(port), user=user,
                               max_connections=threads, timeout=30)
db: Any
if driver == 'psycopg3':
    db = pp.PooledPsycopg3Database(dbname, prepare_threshold=None, **options)
else:
    db = pp.PooledPostgresqlDatabase(dbname, **options)


class Row(Model):
    app = IntegerField()
    thread = IntegerField()
    seq = IntegerField()
    kind = CharField()

    class Meta:
        database = db
        table_name = table


class Rollback(Exception):
    pass


lock = threading.Lock()
results: Dict[str, Any] = {'committed': 0, 'rolled_back': 0,
                           'savepoints_rolled_back': 0,
                           'moved_in_transaction': 0}
errors: List[str] = []
backends: Set[int] = set()
ready = threading.Barrier(threads + 1)
go = threading.Barrier(threads + 1)


def backend_pid():
    return db.execute_sql('SELECT pg_backend_pid()').fetchone()[0]


def request(thread, seq):
    """One request: its own checkout, one transaction, a count."""
    db.connect()
    try:
        if seq % 10 == 9:
            try:
                with db.atomic():
                    Row.create(app=app, thread=thread, seq=seq,
                               kind='rolled_back')
                    raise Rollback()
            except Rollback:
                pass
            return 'rolled_back'
        with db.atomic():
            # One transaction keeps one server connection: PgBouncer's
            # promise in transaction mode, and what peewee relies on.
            first = backend_pid()
            Row.create(app=app, thread=thread, seq=seq, kind='committed')
            if seq % 10 == 4:
                try:
                    with db.atomic():       # a savepoint
                        Row.create(app=app, thread=thread, seq=seq,
                                   kind='savepoint_rolled_back')
                        raise Rollback()
                except Rollback:
                    pass
            last = backend_pid()
        Row.select().where(Row.app == app).count()
        with lock:
            backends.update((first, last))
            results['moved_in_transaction'] += first != last
            if seq % 10 == 4:
                results['savepoints_rolled_back'] += 1
        return 'committed'
    finally:
        db.close()


def work(thread):
    try:
        db.connect()            # hold one client connection until 'go'
        ready.wait()
        go.wait()
        db.close()
        for seq in range(requests):
            outcome = request(thread, seq)
            with lock:
                results[outcome] += 1
    except Exception as exc:
        with lock:
            errors.append('thread %d: %r' % (thread, exc))
        ready.abort()
        go.abort()


workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
for w in workers:
    w.start()
try:
    ready.wait(60)
    print('ready', json.dumps(db.pool_stats()), flush=True)
    sys.stdin.readline()
    go.wait(60)
except threading.BrokenBarrierError:
    pass
for w in workers:
    w.join(120)
results['errors'] = errors
results['backends'] = sorted(backends)
results['alive_threads'] = sum(w.is_alive() for w in workers)
results['pool_stats'] = db.pool_stats()
db.close_all()
print(json.dumps(results), flush=True)
sys.exit(1 if errors or results['alive_threads'] else 0)
