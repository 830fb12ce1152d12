"""When the pool runs dry, MaxConnectionsExceeded says why: the figures
(the same as pool_stats() then), how long the caller waited, and who holds
the connections longest, with their checkout's call site under
leak_timeout."""
import re
import threading

import pytest

import playhouse_pool as pp
from conftest import wait_until


def hold_two(db):
    """Two threads, 'holder-1' and 'holder-2', each holding a connection
    until the returned event is set."""
    release = threading.Event()
    holding = threading.Barrier(3, timeout=10)

    def hold():
        db.connect()                  # the holders' call site
        holding.wait()
        release.wait(30)
        db.close()

    threads = [threading.Thread(target=hold, name='holder-%d' % i)
               for i in (1, 2)]
    for thread in threads:
        thread.start()
    holding.wait()
    return release, threads


def refused(db):
    """The error of a checkout from another thread."""
    errors = []

    def checkout():
        try:
            db.connect()
        except pp.MaxConnectionsExceeded as exc:
            errors.append(exc)

    thread = threading.Thread(target=checkout, name='refused')
    thread.start()
    thread.join(30)
    assert len(errors) == 1
    return str(errors[0])


def figures(message):
    return {key: int(value) for key, value in re.findall(
        r'\b(max_connections|open|in_use|waiting)=(\d+)', message)}


@pytest.mark.parametrize('leak_timeout', [None, 3600],
                         ids=['plain', 'leak_timeout'])
def test_a_timed_out_checkout_says_why_in_the_figures_of_pool_stats(
        server_backend, leak_timeout):
    db = server_backend.make_db(max_connections=2, timeout=0.2,
                                leak_timeout=leak_timeout)
    release, threads = hold_two(db)
    try:
        message = refused(db)
        stats = db.pool_stats()
    finally:
        release.set()
        for thread in threads:
            thread.join(10)
    assert message.startswith('Exceeded maximum connections: timed out')
    assert figures(message) == {
        key: stats[key] for key in ('max_connections', 'open', 'in_use',
                                    'waiting')}
    assert figures(message)['in_use'] == 2
    waited = float(re.search(r'waited (\d+\.\d+)s', message).group(1))
    assert 0.2 <= waited < 5
    assert "by thread 'holder-1'" in message
    assert "by thread 'holder-2'" in message
    if leak_timeout is None:
        assert 'checked out at' not in message
        assert 'Set leak_timeout' in message
    else:
        sites = re.findall(r'checked out at (\S+):(\d+) in (\w+)', message)
        assert len(sites) == 2
        assert all(path.endswith('test_pool_runs_dry.py') and fn == 'hold'
                   for path, _, fn in sites)


def test_a_refusal_without_waiting_says_why(backend):
    db = backend.make_db(max_connections=1)       # timeout=None
    db.connect()
    message = refused(db)
    assert 'timeout=None does not wait' in message
    assert figures(message) == {'max_connections': 1, 'open': 1,
                                'in_use': 1, 'waiting': 0}
    assert "by thread 'MainThread'" in message
    db.close()


def test_max_waiting_refusal_counts_the_threads_in_line(backend):
    db = backend.make_db(max_connections=1, timeout=30, max_waiting=1)
    db.connect()
    served = []
    waiter = threading.Thread(target=lambda: served.append(db.connect()))
    waiter.start()
    wait_until(lambda: db.pool_stats()['waiting'] == 1, what='the waiter')
    message = refused(db)
    assert 'max_waiting=1 threads are already waiting' in message
    assert figures(message)['waiting'] == 1
    db.close()
    waiter.join(10)
    assert served == [True]


def test_a_checkout_without_leak_timeout_records_no_stack(backend):
    db = backend.make_db()
    db.connect()
    assert all(record.stack is None for record in db._in_use.values())
    db.close()
