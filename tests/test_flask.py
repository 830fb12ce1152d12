"""A real Flask app on a real threaded WSGI server, one pooled connection
per request, hit by concurrent HTTP clients."""
import contextlib
import http.client
import threading
from typing import Any, Iterator, List, Tuple

import peewee
import pytest

flask = pytest.importorskip('flask')

from werkzeug.serving import make_server  # noqa: E402

from conftest import run_threads  # noqa: E402

CLIENTS = 8
REQUESTS_PER_CLIENT = 25
MAX_CONNECTIONS = 4


def failing(request_number: int) -> bool:
    """Every fifth request of each client goes to the failing endpoint."""
    return request_number % 5 == 4


def make_app(db: Any, table: Any, wiring: str) -> Any:
    app = flask.Flask(__name__)
    if wiring == 'FlaskDB':
        from playhouse.flask_utils import FlaskDB
        FlaskDB(app, db)
    else:
        @app.before_request
        def open_connection() -> None:
            db.connect()

        @app.teardown_request
        def close_connection(exc: Any) -> None:
            if not db.is_closed():
                db.close()

    @app.post('/rows')
    def insert() -> str:
        with db.atomic():
            table.create(note='good')
            return str(table.select().count())

    @app.post('/fail')
    def insert_then_fail() -> str:
        with db.atomic():
            table.create(note='bad')
            raise RuntimeError('failure in the middle of a transaction')

    return app


@contextlib.contextmanager
def serving(app: Any) -> Iterator[int]:
    """Serve ``app`` on a loopback port, a thread per request; on exit, shut
    down and join every request thread."""
    server = make_server('127.0.0.1', 0, app, threaded=True)
    server.daemon_threads = False       # server_close() joins them all
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def post(port: int, path: str) -> Tuple[int, str]:
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=60)
    try:
        conn.request('POST', path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


@pytest.mark.parametrize('wiring', ['FlaskDB', 'hooks'])
def test_concurrent_requests_commit_only_successful_transactions_and_return_every_connection(  # noqa: E501
        backend: Any, wiring: str) -> None:
    db = backend.make_db(max_connections=MAX_CONNECTIONS, timeout=30)

    class Row(peewee.Model):
        note = peewee.CharField()

        class Meta:
            database = db
            table_name = backend.tag

    with db.connection_context():
        db.create_tables([Row])
    try:
        before = db.pool_stats()
        app = make_app(db, Row, wiring)

        with serving(app) as port:
            def client(_: int) -> List[Tuple[bool, int, str]]:
                results = []
                for n in range(REQUESTS_PER_CLIENT):
                    path = '/fail' if failing(n) else '/rows'
                    results.append((failing(n),) + post(port, path))
                return results

            results = [r for rs in run_threads(CLIENTS, client, timeout=120)
                       for r in rs]
        after = db.pool_stats()     # every request thread has been joined

        good = [(status, body) for bad, status, body in results if not bad]
        bad = [status for is_bad, status, _ in results if is_bad]
        total = CLIENTS * REQUESTS_PER_CLIENT
        assert len(good) + len(bad) == total
        assert {status for status, _ in good} == {200}
        assert all(1 <= int(body) <= len(good) for _, body in good)
        assert set(bad) == {500}

        # Only the good inserts were committed, as seen by another session.
        checker = backend.make_db(max_connections=1)
        with checker.connection_context():
            count = checker.execute_sql(
                'SELECT COUNT(*) FROM %s' % backend.tag).fetchone()[0]
        assert count == len(good)

        # Every request checked one connection out and back in.
        assert after['in_use'] == 0
        assert after['open'] == after['idle'] <= MAX_CONNECTIONS
        assert after['checkouts'] - before['checkouts'] == total
        assert after['reclaimed'] == after['timeouts'] == 0
    finally:
        with db.connection_context():
            db.drop_tables([Row])
