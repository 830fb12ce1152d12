"""Soak: many threads, random operations, injected faults; then the pool, the
server and a ledger table must agree exactly.

Every committed transaction appends a row with a unique key to the ledger.
A thread notes a key as committed only once commit() returned; a commit that
raised (its connection killed mid-flight) is ambiguous and may or may not
have landed. Transactions that were rolled back (an exception inside, or a
thread that died holding one) must leave nothing.
"""
import os
import random
import threading

import pytest

from conftest import (DATABASE_ERRORS, MySQLBackend, Psycopg2Backend,
                      Psycopg3Backend, run_threads, settled, wait_until)

THREADS = 32
OPERATIONS = int(os.environ.get('PLAYHOUSE_POOL_SOAK_OPERATIONS', '2000'))
MAX = 8
EXPECTED = DATABASE_ERRORS


class Ledger:
    def __init__(self, db, backend):
        self.table = backend.tag + '_ledger'
        with db.connection_context():
            db.execute_sql('CREATE TABLE %s (k VARCHAR(40) NOT NULL)'
                           % self.table)
        self.lock = threading.Lock()
        self.committed, self.ambiguous, self.rolled_back = set(), set(), set()

    def note(self, kind, key):
        with self.lock:
            getattr(self, kind).add(key)

    def append(self, db, key):
        db.execute_sql('INSERT INTO %s (k) VALUES (%s)'
                       % (self.table, db.param), (key,))


# One driver per server protocol: the soak is long, and what differs
# between the MySQL drivers is covered by the fault tests on each.
@pytest.mark.timeout(900)
@pytest.mark.parametrize('server_backend', [Psycopg2Backend, Psycopg3Backend,
                                            MySQLBackend], indirect=True)
def test_soak_pool_server_and_ledger_agree(server_backend):
    db = server_backend.make_db(max_connections=MAX, timeout=60)
    ledger = Ledger(db, server_backend)
    faults = {'kills': 0, 'dead_threads': 0, 'errors': 0, 'operations': 0}
    faults_lock = threading.Lock()

    def count(name):
        with faults_lock:
            faults[name] += 1

    def commit_one(key, use_context):
        try:
            if use_context:
                with db.execution_context():
                    ledger.append(db, key)
            else:
                with db.connection_context():
                    with db.atomic():
                        ledger.append(db, key)
        except EXPECTED:
            count('errors')
            ledger.note('ambiguous', key)
            if not db.is_closed():
                db._state.transactions = []
                db.close()
            return
        ledger.note('committed', key)

    def fail_inside_transaction(key):
        try:
            with db.connection_context():
                with db.atomic():
                    ledger.append(db, key)
                    raise LookupError('application error')
        except LookupError:
            ledger.note('rolled_back', key)
        except EXPECTED:
            count('errors')
            ledger.note('rolled_back', key)   # never committed either way

    def die_in_transaction(key):
        def body():
            try:
                db.connect()
                db.execute_sql('BEGIN')
                ledger.append(db, key)
            except EXPECTED:
                count('errors')
        t = threading.Thread(target=body)
        t.start()
        t.join()
        ledger.note('rolled_back', key)
        count('dead_threads')

    def manual_close():
        try:
            db.connect()
            db.execute_sql('SELECT 1')
        except EXPECTED:
            count('errors')
        if not db.is_closed():
            db.manual_close()

    def kill_one(rng):
        ids = sorted(server_backend.server_ids())
        if ids:
            try:
                server_backend.admin_query(
                    'SELECT pg_terminate_backend(%s)' if
                    server_backend.server == 'postgres' else 'KILL %s',
                    (rng.choice(ids),))
                count('kills')
            except Exception:        # already gone
                pass

    def work(i):
        rng = random.Random(i)
        for n in range(OPERATIONS):
            key = '%d-%d' % (i, n)
            roll = rng.random()
            if roll < 0.55:
                commit_one(key, use_context=False)
            elif roll < 0.75:
                commit_one(key, use_context=True)
            elif roll < 0.87:
                fail_inside_transaction(key)
            elif roll < 0.95:
                manual_close()
            elif roll < 0.99:
                die_in_transaction(key)
            elif i % 8 == 0:
                kill_one(rng)
            count('operations')

    run_threads(THREADS, work, timeout=600)

    settled(db)
    stats = db.pool_stats()
    assert stats['in_use'] == 0 and stats['waiting'] == 0
    assert db._reserved == 0
    assert stats['open'] == stats['idle'] <= MAX
    # Killed connections still idle in the pool are found at checkout: use
    # every pooled connection once, then the pool and the server must agree.
    barrier = threading.Barrier(stats['open'])

    def use_one(_):
        with db.connection_context():
            barrier.wait()
            db.execute_sql('SELECT 1')

    run_threads(stats['open'], use_one)
    stats = db.pool_stats()
    wait_until(lambda: len(server_backend.server_ids()) == stats['open'],
               what='the server to drop killed backends')
    live = server_backend.server_ids()
    with db.connection_context():
        rows = db.execute_sql('SELECT k, COUNT(*) FROM %s GROUP BY k'
                              % ledger.table).fetchall()
    found = {k: n for k, n in rows}
    assert [k for k, n in found.items() if n > 1] == []          # no dupes
    assert ledger.committed - set(found) == set()                # none lost
    assert set(found) - ledger.committed <= ledger.ambiguous     # no ghosts
    assert ledger.rolled_back & set(found) == set()
    print('\nsoak %s: %s, committed %d, found %d, ambiguous %d, '
          'rolled back %d, stats %s, server connections %d'
          % (server_backend.name, faults, len(ledger.committed), len(found),
             len(ledger.ambiguous), len(ledger.rolled_back), stats,
             len(live)))
    assert faults['operations'] == THREADS * OPERATIONS
    assert faults['kills'] > 0 and faults['dead_threads'] > 0
    db.close_all()
    wait_until(lambda: not server_backend.server_ids(), what='all closed')
