"""The pool's events: every event reaches the listeners, the time histograms
count every value once, and pool_stats() keeps the new totals."""
import bisect
import socket
import threading
from typing import Any, List, Tuple

import peewee
import pytest

import playhouse_pool as pp
from playhouse_pool.events import (_EVENTS, BUCKETS, PoolEvents,
                                   PoolListener, TimeHistogram, _nothing,
                                   events_of)

from conftest import run_threads, settled, wait_until


class Recorder(PoolListener):
    """Every event it hears, in order."""

    def __init__(self) -> None:
        self.heard: List[Tuple[str, Any]] = []

    def checkout(self, wait: float) -> None:
        self.heard.append(('checkout', wait))

    def checkin(self, use: float) -> None:
        self.heard.append(('checkin', use))

    def connected(self, seconds: float) -> None:
        self.heard.append(('connected', seconds))

    def connect_failed(self) -> None:
        self.heard.append(('connect_failed', None))

    def timeout(self) -> None:
        self.heard.append(('timeout', None))

    def closed(self, count: int) -> None:
        self.heard.append(('closed', count))

    def names(self) -> List[str]:
        return [name for name, _ in self.heard]


def refused_port() -> int:
    """A loopback port nothing listens on (connects are refused)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_a_pool_has_no_listener_until_one_is_attached(tmp_path: Any) -> None:
    db = pp.PooledSqliteDatabase(str(tmp_path / 'a.db'))
    assert events_of(db).listeners == ()


def untouchable(db: Any) -> Any:
    """Make every event of ``db`` fail if called (no listener is
    attached: the pool must not call them)."""
    def fail(*args: Any) -> None:
        raise AssertionError('an event was dispatched with no listener')

    events = events_of(db)
    assert events.listeners == ()
    for event in _EVENTS:
        setattr(events, event, fail)
    return db


def test_with_no_listener_the_pool_dispatches_no_event(
        tmp_path: Any) -> None:
    db = untouchable(pp.PooledSqliteDatabase(str(tmp_path / 'a.db'),
                                             max_connections=1))
    thread = threading.Thread(target=db.connect)   # reclaimed: a check-in
    thread.start()
    thread.join()
    wait_until(lambda: db.pool_stats()['reclaimed'] == 1, what='reclaim')
    with db.connection_context():
        with pytest.raises(pp.MaxConnectionsExceeded):
            with db.execution_context():
                pass
    db.connect()
    db.manual_close()
    db.close_all()
    failing = untouchable(pp.PooledPostgresqlDatabase(
        'test', host='127.0.0.1', port=refused_port()))
    with pytest.raises(peewee.OperationalError):
        failing.connect()

    stats = db.pool_stats()
    assert (stats['checkouts'], stats['timeouts'], stats['closed']) == \
        (3, 1, 1)
    assert failing.pool_stats()['connect_errors'] == 1


def test_events_of_refuses_a_database_without_a_pool() -> None:
    with pytest.raises(TypeError, match='not a pooled database'):
        events_of(peewee.SqliteDatabase(':memory:'))


def test_a_listener_hears_each_event_of_a_workload(backend: Any) -> None:
    db = backend.make_db(max_connections=2)
    recorder = Recorder()
    events_of(db).attach(recorder)

    for _ in range(3):                   # one connect, three checkouts
        with db.connection_context():
            db.execute_sql('SELECT 1')
    with db.execution_context(with_transaction=False):
        with db.execution_context(with_transaction=False):    # a 2nd one
            with pytest.raises(pp.MaxConnectionsExceeded):     # full
                with db.execution_context():
                    pass
    db.connect()
    db.manual_close()                    # closed(1)
    assert db.close_all() == 1           # closed(1): the idle one

    assert recorder.names() == (
        ['connected', 'checkout', 'checkin']
        + ['checkout', 'checkin'] * 2
        + ['checkout', 'connected', 'checkout', 'timeout', 'checkin',
           'checkin']
        + ['checkout', 'checkin', 'closed', 'closed'])
    assert [v for n, v in recorder.heard if n == 'closed'] == [1, 1]
    times = [v for n, v in recorder.heard
             if n in ('checkout', 'checkin', 'connected')]
    assert all(isinstance(v, float) and v >= 0 for v in times)
    stats = db.pool_stats()
    assert recorder.names().count('checkout') == stats['checkouts'] == 6
    assert recorder.names().count('connected') == stats['created'] == 2
    assert recorder.names().count('timeout') == stats['timeouts'] == 1
    uses = sum(v for n, v in recorder.heard if n == 'checkin')
    connects = sum(v for n, v in recorder.heard if n == 'connected')
    assert stats['use_seconds'] == pytest.approx(uses, rel=1e-9)
    assert stats['connect_seconds'] == pytest.approx(connects, rel=1e-9)


def test_a_failed_connect_is_an_event_and_a_connect_error() -> None:
    db = pp.PooledPostgresqlDatabase('test', host='127.0.0.1',
                                     port=refused_port())
    recorder = Recorder()
    events_of(db).attach(recorder)

    with pytest.raises(peewee.OperationalError):
        db.connect()                     # no timeout: the first error

    assert recorder.names() == ['connect_failed']
    assert db.pool_stats()['connect_errors'] == 1
    assert db.pool_stats()['created'] == 0


def test_connect_errors_count_every_attempt_of_a_retried_connect() -> None:
    db = pp.PooledPostgresqlDatabase('test', host='127.0.0.1',
                                     port=refused_port(), timeout=0.3)
    recorder = Recorder()
    events_of(db).attach(recorder)

    with pytest.raises(peewee.OperationalError, match='could not connect'):
        db.connect()

    settled(db)                          # the last attempt has ended
    attempts = recorder.names().count('connect_failed')
    assert attempts >= 2                 # retried within the timeout
    assert db.pool_stats()['connect_errors'] == attempts


def test_a_reclaimed_connection_is_checked_in(tmp_path: Any) -> None:
    db = pp.PooledSqliteDatabase(str(tmp_path / 'a.db'))
    recorder = Recorder()
    events_of(db).attach(recorder)

    thread = threading.Thread(target=db.connect)   # ends without close()
    thread.start()
    thread.join()

    wait_until(lambda: db.pool_stats()['reclaimed'] == 1, what='reclaim')
    assert recorder.names() == ['connected', 'checkout', 'checkin']
    assert db.pool_stats()['use_seconds'] == recorder.heard[2][1]


def test_a_checkout_that_meets_a_dead_connection_counts_once(
        tmp_path: Any) -> None:
    db = pp.PooledSqliteDatabase(str(tmp_path / 'a.db'), max_connections=2)
    recorder = Recorder()
    events_of(db).attach(recorder)
    with db.connection_context():
        dead = db.connection()
    dead.close()                 # behind the pool's back, while idle

    with db.connection_context():
        assert db.connection() is not dead     # replaced at checkout
    settled(db)

    stats = db.pool_stats()
    assert stats['created'] == 2 and stats['closed'] == 1
    assert stats['checkouts'] == 2
    assert [e for e, _ in recorder.heard].count('checkout') == 2


def test_a_detached_listener_hears_nothing_more(tmp_path: Any) -> None:
    db = pp.PooledSqliteDatabase(str(tmp_path / 'a.db'))
    recorder = Recorder()
    events = events_of(db)
    events.attach(recorder)
    db.connect()
    events.detach(recorder)
    db.close()

    assert recorder.names() == ['connected', 'checkout']
    assert events.listeners == ()
    with pytest.raises(ValueError):
        events.detach(recorder)


def test_events_a_listener_leaves_to_the_base_cost_no_call() -> None:
    class CheckoutsOnly(PoolListener):
        def checkout(self, wait: float) -> None:
            pass

    events = PoolEvents()
    listener = CheckoutsOnly()
    events.attach(listener)
    assert events.checkout == listener.checkout       # called directly
    assert events.checkin is events.closed is _nothing


def test_the_times_listener_is_shared_and_attached_once(
        tmp_path: Any) -> None:
    db = pp.PooledSqliteDatabase(str(tmp_path / 'a.db'))
    events = events_of(db)
    times = events.times()
    assert events.times() is times
    assert events.listeners == (times,)


# -- TimeHistogram ------------------------------------------------------------

def test_each_value_goes_to_the_first_bucket_whose_bound_holds_it() -> None:
    histogram = TimeHistogram((0.001, 0.01, 0.1))
    for value in (0.0, 0.001, 0.0011, 0.01, 0.05, 0.1, 0.5, 20.0):
        histogram.add(value)

    counts, total = histogram.snapshot()

    assert counts == [2, 2, 2, 2]        # <=1ms, <=10ms, <=100ms, +Inf
    assert total == pytest.approx(20.6621)


def test_buckets_run_from_ten_microseconds_to_fifty_seconds() -> None:
    assert BUCKETS[0] == pytest.approx(1e-5)
    assert BUCKETS[-1] == pytest.approx(50.0)
    assert list(BUCKETS) == sorted(set(BUCKETS))


def test_bounds_that_do_not_increase_are_refused() -> None:
    with pytest.raises(ValueError, match='increase'):
        TimeHistogram((0.1, 0.01))


def test_values_added_by_many_threads_at_once_are_each_counted_once(
) -> None:
    histogram = TimeHistogram()
    tap = histogram.tap()
    per_thread, threads = 20000, 8
    taken: List[float] = []
    done = threading.Event()

    def collect() -> None:               # collections race the adders
        while not done.is_set():
            histogram.snapshot()
            taken.extend(histogram.take(tap))

    collector = threading.Thread(target=collect)
    collector.start()
    try:
        run_threads(threads, lambda i: [histogram.add(BUCKETS[i % 20])
                                        for _ in range(per_thread)])
    finally:
        done.set()
        collector.join()
    taken.extend(histogram.take(tap))

    counts, total = histogram.snapshot()
    assert sum(counts) == len(taken) == per_thread * threads
    expected = [0] * (len(BUCKETS) + 1)
    for i in range(threads):
        expected[bisect.bisect_left(BUCKETS, BUCKETS[i % 20])] += per_thread
    assert counts == expected
    assert total == pytest.approx(sum(taken))


def test_pending_values_are_binned_in_the_background_when_nothing_collects(
) -> None:
    histogram = TimeHistogram()
    for _ in range(10000):
        histogram.add(0.001)
    wait_until(lambda: not histogram._pending, what='the background fold')
    assert histogram._counts[BUCKETS.index(0.001)] == 10000


def test_several_listeners_each_hear_an_event() -> None:
    events = PoolEvents()
    first, second = Recorder(), Recorder()
    events.attach(first)
    events.attach(second)
    events.checkout(0.5)
    events.closed(2)
    assert first.heard == second.heard == [('checkout', 0.5), ('closed', 2)]


def test_a_tap_gets_each_value_added_after_it_once_in_order() -> None:
    histogram = TimeHistogram()
    histogram.add(9.0)                    # before the tap: not its
    tap = histogram.tap()
    for value in (0.1, 0.2, 0.3):
        histogram.add(value)

    assert list(histogram.take(tap)) == [0.1, 0.2, 0.3]
    assert list(histogram.take(tap)) == []
    histogram.add(0.4)
    assert list(histogram.take(tap)) == [0.4]
    histogram.untap(tap)
    histogram.add(0.5)
    assert list(histogram.take(tap)) == []
    assert sum(histogram.snapshot()[0]) == 6


def test_a_full_tap_counts_what_it_drops() -> None:
    histogram = TimeHistogram()
    tap = histogram.tap(capacity=3)
    for value in (0.1, 0.2, 0.3, 0.4, 0.5):
        histogram.add(value)

    assert list(histogram.take(tap)) == [0.1, 0.2, 0.3]
    assert tap.dropped == 2
    assert sum(histogram.snapshot()[0]) == 5      # the histogram has all
