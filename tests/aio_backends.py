"""The asyncio face's backends for the tests (asyncpg, aiomysql,
aiosqlite), against the same servers as the thread tests (conftest.py),
and the ``aio_backend`` fixture, each test's pools closed on its own loop.

A test module imports the fixture: ``from aio_backends import
aio_backend``. Modules that import this one skip on a peewee without
``playhouse_pool.asyncio`` (peewee 3, or 4 before 4.3), saying why.
"""
import asyncio
import threading
import time
from typing import Any, Callable, List, Optional, Set

import pytest

try:
    import playhouse_pool.asyncio as aio
except ImportError as exc:          # peewee 3, 4.0-4.2, no greenlet
    pytest.skip(str(exc), allow_module_level=True)

import pytest_asyncio  # noqa: E402

from conftest import (MYSQL_URL, POSTGRES_URL, MySQLAdmin,  # noqa: E402
                      PostgresAdmin, ServerAdmin, _require, _url_kwargs)


async def eventually(predicate: Callable[[], Any], timeout: float = 10.0,
                     what: str = 'condition') -> Any:
    """Await a condition the test cannot be signalled about (the server's
    view, the pool's jobs), the loop running meanwhile. Fails the test at
    the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail('timed out waiting for %s' % what)
        await asyncio.sleep(0.005)


async def settled(db: Any) -> None:
    """Until the pool's jobs have finished (connects, closes, resets)."""
    await eventually(lambda: db._lender.ledger.slots.reserved == 0,
                     what='the pool jobs to finish')


def lender(db: Any) -> Any:
    return db._lender


def idle_unclean(db: Any) -> List[str]:
    """What the backend's own check-in verdict says of each idle
    connection that is not clean (mid-statement, a cancel under way, in a
    transaction, closed): none should ever be."""
    from playhouse_pool.asyncio.opening import CLEAN
    verdicts = [db._checkin_state(r.conn) for r in db._lender.ledger.idle]
    return [v for v in verdicts if v != CLEAN]


class Gate:
    """A statement that runs until the test lets it go: ``sql``; await
    ``inside()`` until it is running (in the server, or in SQLite);
    ``release()`` lets it end."""

    def __init__(self, sql: str, inside: Callable[[], bool],
                 release: Callable[[], None] = lambda: None) -> None:
        self.sql = sql
        self._inside = inside
        self.release = release

    async def inside(self) -> None:
        await eventually(self._inside, what='the statement to be running')


class AioBackend(ServerAdmin):
    name = ''
    server = ''
    driver = ''
    needs_peewee = 4
    install = "pip install -e '.[test]'"
    kills = True
    db_class: Any = None

    def __init__(self, tmp_path: Any) -> None:
        import uuid
        self.tmp_path = tmp_path
        self.tag = 'pp_aio_%s' % uuid.uuid4().hex[:10]
        self._dbs: List[Any] = []
        self._admin: Optional[Any] = None
        self._admin_lock = threading.Lock()

    def make_db(self, **kwargs: Any) -> Any:
        """A pooled async database of this backend, closed at the end of
        the test."""
        db = self._make_db(**kwargs)
        self._dbs.append(db)
        return db

    def _make_db(self, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def aclose(self) -> None:
        for db in self._dbs:
            try:
                await asyncio.wait_for(db.close_pool(), 10)
            except Exception:
                pass
        self._drop()
        if self._admin is not None:
            self._admin.close()

    def local_id(self, conn: Any) -> int:
        """The server's id of a wrapped connection, as the driver learned
        it at connect (no statement sent)."""
        raise NotImplementedError

    def gate(self, db: Any) -> Gate:
        raise NotImplementedError


class AsyncpgBackend(PostgresAdmin, AioBackend):
    name = 'asyncpg'
    server = 'postgres'
    driver = 'asyncpg'
    db_class = aio.AsyncPostgresqlDatabase

    def _make_db(self, **kwargs: Any) -> Any:
        params = _url_kwargs(POSTGRES_URL)
        params.update(kwargs)
        params.setdefault('server_settings', {'application_name': self.tag})
        return self.db_class(params.pop('database'), **params)

    def local_id(self, conn: Any) -> int:
        return int(conn.conn.get_server_pid())

    def gate(self, db: Any) -> Gate:
        return Gate('SELECT pg_sleep(5)', lambda: self.admin_query(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = %s "
            "AND state = 'active' AND query LIKE 'SELECT pg_sleep%%'",
            (self.tag,)))


class AiomysqlBackend(MySQLAdmin, AioBackend):
    name = 'aiomysql'
    server = 'mysql'
    driver = 'aiomysql'
    db_class = aio.AsyncMySQLDatabase

    def _make_db(self, **kwargs: Any) -> Any:
        self.create_database()
        params = _url_kwargs(MYSQL_URL)
        params.pop('database')
        params.update(kwargs)
        return self.db_class(self.tag, **params)

    def local_id(self, conn: Any) -> int:
        return int(conn.conn.thread_id())

    def _drop(self) -> None:
        if self._dbs:
            super()._drop()

    def gate(self, db: Any) -> Gate:
        return Gate('SELECT SLEEP(3)', lambda: self.admin_query(
            "SELECT 1 FROM information_schema.PROCESSLIST WHERE DB = %s "
            "AND INFO LIKE 'SELECT SLEEP%%'", (self.tag,)))


class AiosqliteBackend(AioBackend):
    name = 'aiosqlite'
    server = 'sqlite'
    driver = 'aiosqlite'
    kills = False
    db_class = aio.AsyncSqliteDatabase

    def _make_db(self, **kwargs: Any) -> Any:
        return self.db_class(str(self.tmp_path / 'aio.db'), **kwargs)

    def server_ids(self) -> Set[int]:
        # aiosqlite runs each connection on a thread of its own until it
        # is closed.
        return {id(t) for t in threading.enumerate()
                if getattr(getattr(t, '_target', None), '__name__', '')
                == '_connection_worker_thread' and t.is_alive()}

    def gate(self, db: Any) -> Gate:
        entered, release = threading.Event(), threading.Event()

        def gate() -> int:
            entered.set()
            release.wait(10)
            return 1

        db.register_function(gate, 'gate', 0)
        return Gate('SELECT gate()', entered.is_set, release.set)


AIO_BACKENDS = [AiosqliteBackend, AsyncpgBackend, AiomysqlBackend]
AIO_SERVER_BACKENDS = [AsyncpgBackend, AiomysqlBackend]


async def _aio_backend(cls: Any, tmp_path: Any) -> Any:
    _require(cls)
    backend = cls(tmp_path)
    try:
        yield backend
    finally:
        await backend.aclose()


@pytest_asyncio.fixture(params=AIO_BACKENDS,
                        ids=[b.name for b in AIO_BACKENDS])
async def aio_backend(request: Any, tmp_path: Any) -> Any:
    """Every asyncio backend: aiosqlite, asyncpg (Postgres), aiomysql
    (MySQL)."""
    async for backend in _aio_backend(request.param, tmp_path):
        yield backend


@pytest_asyncio.fixture(params=AIO_SERVER_BACKENDS,
                        ids=[b.name for b in AIO_SERVER_BACKENDS])
async def aio_server_backend(request: Any, tmp_path: Any) -> Any:
    """The asyncio backends with a server that can kill connections."""
    async for backend in _aio_backend(request.param, tmp_path):
        yield backend
