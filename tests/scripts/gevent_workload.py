"""Run under gevent's monkey patching (a process of its own): 200 greenlets
share 10 pymysql connections, then 10 greenlets end without close().
Prints the outcome as JSON for tests/test_gevent.py."""
from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402

import playhouse_pool as pp  # noqa: E402

db = pp.connect(sys.argv[1] + '?max_connections=10&timeout=30')
done = []


def request(i):
    with db.connection_context():
        db.execute_sql('SELECT SLEEP(0.01)')
        done.append(i)


def forget_to_close(i):
    db.connect()
    db.execute_sql('SELECT 1')


jobs = [gevent.spawn(request, i) for i in range(200)]
gevent.joinall(jobs, timeout=60)
after_requests = db.pool_stats()
gevent.joinall([gevent.spawn(forget_to_close, i) for i in range(10)])
gevent.joinall([gevent.spawn(request, i) for i in range(200, 210)],
               timeout=60)
print(json.dumps({
    'done': len(done),
    'errors': [repr(j.exception) for j in jobs if j.exception],
    'after_requests': after_requests,
    'final': db.pool_stats(),
}))
