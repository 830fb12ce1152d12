"""Many threads, random operations: the bookkeeping stays exact."""
import random
import threading
import tracemalloc


import playhouse_pool as pp
from conftest import DATABASE_ERRORS, run_threads, settled

MAX = 4


class Holders:
    """Which thread holds which connection; a second holder is a failure."""

    def __init__(self):
        self._lock = threading.Lock()
        self._held = {}
        self.violations = []

    def take(self, conn):
        me = threading.current_thread().name
        with self._lock:
            if id(conn) in self._held:
                self.violations.append((self._held[id(conn)], me))
            self._held[id(conn)] = me

    def drop(self, conn):
        with self._lock:
            self._held.pop(id(conn), None)


def test_random_operations_never_share_or_exceed(backend):
    db = backend.make_db(max_connections=MAX, timeout=60)
    holders = Holders()
    over_max = []

    def request(rng):
        db.connect()
        conn = db.connection()
        holders.take(conn)
        db.execute_sql('SELECT 1')
        holders.drop(conn)
        if rng.random() < 0.2:
            db.manual_close()
        else:
            db.close()

    def failing_transaction(rng):
        db.connect()
        conn = db.connection()
        holders.take(conn)
        try:
            with db.atomic():
                db.execute_sql('SELECT 1')
                raise ValueError('rolled back')
        except ValueError:
            pass
        holders.drop(conn)
        db.close()

    def execution_context(rng):
        with db.execution_context():
            conn = db.connection()
            holders.take(conn)
            db.execute_sql('SELECT 1')
            holders.drop(conn)

    def query_error(rng):
        with db.connection_context():
            conn = db.connection()
            holders.take(conn)
            try:
                db.execute_sql('SELECT * FROM pp_no_such_table')
            except DATABASE_ERRORS:
                pass
            holders.drop(conn)

    operations = [request, failing_transaction, execution_context,
                  query_error]

    def work(i):
        rng = random.Random(i)
        for _ in range(150):
            rng.choice(operations)(rng)
            stats = db.pool_stats()
            if stats['open'] > MAX:
                over_max.append(stats)

    run_threads(12, work, timeout=120)
    settled(db)
    stats = db.pool_stats()
    assert holders.violations == []
    assert over_max == []
    assert stats['open'] == stats['in_use'] + stats['idle']
    assert stats['in_use'] == 0 and stats['waiting'] == 0
    assert db._reserved == 0
    assert stats['created'] - stats['closed'] == stats['open']
    if backend.server != 'sqlite':
        assert len(backend.server_ids()) == stats['open']


def test_checkouts_leave_no_growth_in_bookkeeping(tmp_path):
    db = pp.PooledSqliteDatabase(str(tmp_path / 'm.db'), max_connections=2)

    def cycle(count):
        for _ in range(count):
            db.connect()
            db.close()

    cycle(10_000)
    tracemalloc.start()
    try:
        cycle(1_000)
        before = tracemalloc.take_snapshot()
        cycle(200_000)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    # Anything still allocated after 200,000 more checkouts, wherever it was
    # allocated (the pool, peewee, the driver), is growth.
    growth = sum(stat.size_diff
                 for stat in after.compare_to(before, 'filename'))
    assert growth < 16384, growth
    assert db.pool_stats()['checkouts'] == 211_000
    db.close_all()
