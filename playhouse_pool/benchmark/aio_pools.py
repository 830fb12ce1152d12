"""The asyncio pools under test (``--asyncio``), behind one small interface
(``AsyncAdapter``).

Each is built from the same ``AioSettings`` (in our keywords), mapped to
the pool's own:

- ``playhouse_pool``: ours, ``playhouse_pool.asyncio``, through its public
  API (``_ours``); where it cannot be imported (peewee 4 before 4.3) its
  row reads "n/a" with the reason;
- ``lean``: the lean asyncio reference (``aio_lean.py``);
- ``pwasyncio``: peewee 4's ``playhouse.pwasyncio`` as shipped, on its
  driver's pool (asyncpg's ``Pool``, aiomysql's, its own fixed list for
  SQLite): ``pool_size``, ``pool_min_size``, ``acquire_timeout``; it has no
  maximum age;
- ``psycopg_pool``: psycopg's ``AsyncConnectionPool`` (Postgres):
  ``min_size``, ``max_size``, ``max_lifetime``;
- ``asyncpg``: a bare ``asyncpg.Pool`` (Postgres): ``min_size``,
  ``max_size``; no maximum age either.

The three pwasyncio rows (ours, lean, stock) are driven as a pwasyncio user
writes it: ``await db.aconnect()``, ``await db.aexecute_sql(...)``, ``await
db.aclose()``. Nothing here imports ``playhouse.pwasyncio`` or a driver at
import time: the benchmark runs on peewee 3 too, and ``check_drivers``
refuses ``--asyncio`` up front, naming what to install (the bench extra).
"""
from __future__ import annotations

import asyncio
import importlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

import peewee

from .pools import LEAN, OURS, PSYCOPG, psycopg_pool
from .target import BENCH_INSTALL, Target

STOCK, ASYNCPG = 'pwasyncio', 'asyncpg'
SQL = 'SELECT 1'

# The row "playhouse_pool" (ours).
OURS_MODULE = 'playhouse_pool.asyncio'

# The asyncio driver --asyncio needs on each backend (beside greenlet, and
# the plain driver --url needs: the storm counts the server's connections
# through it). The bench extra installs them all, and psycopg_pool.
_DRIVERS = {'postgres': 'asyncpg', 'mysql': 'aiomysql',
            'sqlite': 'aiosqlite'}


def check_drivers(target: Target) -> None:
    """ImportError naming what to install if ``--asyncio`` cannot run on
    ``target`` here: peewee 4 (``playhouse.pwasyncio``), greenlet and the
    backend's driver; on Postgres also psycopg_pool, whose
    ``AsyncConnectionPool`` is one of the peers (the thread scenarios leave
    its row out instead). What to install is said as ``--url`` says it for
    a missing driver: the bench extra (``BENCH_INSTALL``); it leaves peewee
    as it is, so peewee 3 is told to upgrade."""
    major = int(peewee.__version__.split('.')[0])  # type: ignore[attr-defined]
    if major < 4:
        raise ImportError(
            "--asyncio needs peewee 4 (playhouse.pwasyncio); this is peewee "
            "%s: pip install 'peewee>=4'"
            % peewee.__version__)  # type: ignore[attr-defined]
    for module in ('greenlet', _DRIVERS[target.kind]):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ImportError('--asyncio on %s needs %s, not installed (%s): '
                              '%s' % (target.kind, module, exc,
                                      BENCH_INSTALL)) from exc
    if target.kind == 'postgres' and psycopg_pool is None:
        raise ImportError('--asyncio on postgres runs psycopg_pool\'s '
                          'AsyncConnectionPool beside the others, not '
                          'installed: %s' % BENCH_INSTALL)


@dataclass(frozen=True)
class AioSettings:
    """What a scenario asks of every pool, in playhouse_pool's keywords.

    ``stale_timeout`` is psycopg_pool's ``max_lifetime`` (stock pwasyncio
    and asyncpg have none); ``timeout`` bounds each checkout's wait;
    ``tag`` names the pool's connections on the server (Postgres:
    ``application_name``; MySQL: the database they use, which the scenario
    creates), so that the server's count of them can be read.
    """
    max_connections: int
    min_connections: int = 0
    stale_timeout: Optional[float] = None
    timeout: float = 30.0
    tag: Optional[str] = None


class AsyncAdapter(Protocol):
    """What the asyncio scenarios see of a pool. ``checkin`` gets the error
    the request is failing with, if any (a context manager's exit does)."""

    async def open(self) -> None: ...
    async def checkout(self) -> Any: ...
    async def query(self, handle: Any) -> None: ...
    async def checkin(self, handle: Any,
                      error: Optional[BaseException]) -> None: ...
    async def close(self) -> None: ...

    def counts(self) -> Dict[str, int]:
        """The pool's own view: ``open`` connections and those ``in_use``
        (checked out)."""
        ...


class PwasyncioAdapter:
    """A pwasyncio database: ``aconnect()`` checks out for the task,
    ``aclose()`` checks in."""

    def __init__(self, db: Any,
                 counts: Callable[[Any], Dict[str, int]]) -> None:
        self.db = db
        self._counts = counts

    async def open(self) -> None:
        pass                # the first aconnect() makes the pool

    async def checkout(self) -> None:
        await self.db.aconnect()

    async def query(self, handle: None) -> None:
        (await self.db.aexecute_sql(SQL)).fetchone()

    async def checkin(self, handle: None,
                      error: Optional[BaseException]) -> None:
        await self.db.aclose()

    async def close(self) -> None:
        await self.db.close_pool()

    def counts(self) -> Dict[str, int]:
        return self._counts(self.db)


class PsycopgAsyncAdapter:
    """psycopg's ``AsyncConnectionPool`` through ``async with
    pool.connection() as conn``, entered and exited by hand."""

    def __init__(self, pool: Any, timeout: float) -> None:
        self.pool = pool
        self.timeout = timeout

    async def open(self) -> None:
        await self.pool.open(wait=True)

    async def checkout(self) -> Tuple[Any, Any]:
        context = self.pool.connection(timeout=self.timeout)
        return context, await context.__aenter__()

    async def query(self, handle: Tuple[Any, Any]) -> None:
        await (await handle[1].execute(SQL)).fetchone()

    async def checkin(self, handle: Tuple[Any, Any],
                      error: Optional[BaseException]) -> None:
        await handle[0].__aexit__(type(error) if error else None, error,
                                  error.__traceback__ if error else None)

    async def close(self) -> None:
        await self.pool.close(timeout=5)

    def counts(self) -> Dict[str, int]:
        stats = self.pool.get_stats()
        return {'open': stats['pool_size'],
                'in_use': stats['pool_size'] - stats['pool_available']}


class AsyncpgAdapter:
    """A bare ``asyncpg.Pool``: ``acquire()``, ``fetchval()``,
    ``release()``."""

    def __init__(self, pool: Any, timeout: float) -> None:
        self.pool = pool
        self.timeout = timeout

    async def open(self) -> None:
        await self.pool               # opens min_size connections

    async def checkout(self) -> Any:
        return await self.pool.acquire(timeout=self.timeout)

    async def query(self, handle: Any) -> None:
        await handle.fetchval(SQL)

    async def checkin(self, handle: Any,
                      error: Optional[BaseException]) -> None:
        await self.pool.release(handle)

    async def close(self) -> None:
        await _asyncpg_close(self.pool)

    def counts(self) -> Dict[str, int]:
        return _asyncpg_counts(self.pool)


async def _asyncpg_close(pool: Any) -> None:
    try:
        await asyncio.wait_for(pool.close(), 5)
    except asyncio.TimeoutError:
        pool.terminate()


def _asyncpg_counts(pool: Any) -> Dict[str, int]:
    size = pool.get_size()
    return {'open': size, 'in_use': size - pool.get_idle_size()}


# -- Connect parameters -------------------------------------------------------

def driver_params(target: Target, settings: AioSettings) -> Dict[str, Any]:
    """The target's connect parameters in the async driver's words (as
    pwasyncio passes them on: the database aside), tagged."""
    params = dict(target.params)
    if 'passwd' in params:            # peewee's URL parser, for MySQL
        params['password'] = params.pop('passwd')
    if settings.tag is not None and target.kind == 'postgres':
        params['server_settings'] = {'application_name': settings.tag}
    return params


def database_of(target: Target, settings: AioSettings) -> str:
    """MySQL: the tag is the database the pool's connections use."""
    if settings.tag is not None and target.kind == 'mysql':
        return settings.tag
    return target.database


# -- Builders -----------------------------------------------------------------

AioBuilder = Callable[[Target, AioSettings], AsyncAdapter]


@dataclass(frozen=True)
class AioPoolSpec:
    """A pool to run; ``pending``: why its row cannot run yet (shown in
    its place and in its targets' verdicts)."""
    name: str
    build: AioBuilder
    pending: Optional[str] = None


_STOCK_NAMES = {'postgres': 'AsyncPostgresqlDatabase',
                'mysql': 'AsyncMySQLDatabase',
                'sqlite': 'AsyncSqliteDatabase'}


def _stock_counts(db: Any) -> Dict[str, int]:
    pool = db._pool
    if pool is None:
        return {'open': 0, 'in_use': 0}
    if hasattr(pool, 'get_idle_size'):                  # asyncpg
        return _asyncpg_counts(pool)
    if hasattr(pool, 'freesize'):                       # aiomysql
        return {'open': pool.size, 'in_use': pool.size - pool.freesize}
    # pwasyncio's SQLite pool: pool_size connections, the idle ones queued.
    return {'open': pool._pool_size,
            'in_use': pool._pool_size - pool._queue.qsize()}


def _build_stock(target: Target, settings: AioSettings) -> AsyncAdapter:
    from playhouse import pwasyncio
    db = getattr(pwasyncio, _STOCK_NAMES[target.kind])(
        database_of(target, settings),
        pool_size=settings.max_connections,
        pool_min_size=settings.min_connections,
        acquire_timeout=settings.timeout, **driver_params(target, settings))
    return PwasyncioAdapter(db, _stock_counts)


def _build_lean(target: Target, settings: AioSettings) -> AsyncAdapter:
    from .aio_lean import LEAN_ASYNC_CLASSES
    db = LEAN_ASYNC_CLASSES[target.kind](
        database_of(target, settings),
        max_connections=settings.max_connections,
        **driver_params(target, settings))
    return PwasyncioAdapter(db, lambda db: db.lean_counts())


def _build_psycopg(target: Target, settings: AioSettings) -> AsyncAdapter:
    assert psycopg_pool is not None
    lifetime: Dict[str, Any] = ({} if settings.stale_timeout is None else
                                {'max_lifetime': settings.stale_timeout})
    tag = ({} if settings.tag is None
           else {'application_name': settings.tag})
    # autocommit, as pwasyncio's connections are: the same round trips.
    pool = psycopg_pool.AsyncConnectionPool(
        target.conninfo(), min_size=settings.min_connections,
        max_size=settings.max_connections, timeout=settings.timeout,
        kwargs={'autocommit': True, **tag}, open=False, **lifetime)
    return PsycopgAsyncAdapter(pool, settings.timeout)


def _build_asyncpg(target: Target, settings: AioSettings) -> AsyncAdapter:
    import asyncpg
    pool = asyncpg.create_pool(
        database=target.database, min_size=settings.min_connections,
        max_size=settings.max_connections, **driver_params(target, settings))
    return AsyncpgAdapter(pool, settings.timeout)


# -- Ours: the row "playhouse_pool" ------------------------------------------
#
# playhouse_pool.asyncio's three classes under pwasyncio's names, our
# keywords, pool_stats(). Where it cannot be imported (peewee 4 before 4.3)
# the row and its targets read "n/a" with the reason (aio_catalog.py has
# the targets).

def _ours(module: Any) -> AioBuilder:
    """Ours, with the thread pool's keywords (docs/design.rst, "The asyncio
    face"); pwasyncio's own are accepted as well, so a user's code runs
    unchanged, but the benchmark speaks ours."""
    def build(target: Target, settings: AioSettings) -> AsyncAdapter:
        db = getattr(module, _STOCK_NAMES[target.kind])(
            database_of(target, settings),
            max_connections=settings.max_connections,
            min_connections=settings.min_connections,
            stale_timeout=settings.stale_timeout, timeout=settings.timeout,
            **driver_params(target, settings))
        return PwasyncioAdapter(db, _ours_counts)
    return build


def _ours_counts(db: Any) -> Dict[str, int]:
    stats = db.pool_stats()
    return {'open': stats['open'], 'in_use': stats['in_use']}


def _ours_spec() -> AioPoolSpec:
    try:
        module = importlib.import_module(OURS_MODULE)
    except ImportError as exc:
        if (isinstance(exc, ModuleNotFoundError)
                and exc.name != OURS_MODULE):
            raise
        reason = str(exc).split(' (')[0].split(':')[0]
        return AioPoolSpec(OURS, _cannot_run(reason), pending=reason)
    return AioPoolSpec(OURS, _ours(module))


def _cannot_run(reason: str) -> AioBuilder:
    def build(target: Target, settings: AioSettings) -> AsyncAdapter:
        raise RuntimeError('%s: %s' % (OURS_MODULE, reason))
    return build


def aio_pool_specs(target: Target) -> List[AioPoolSpec]:
    """Every asyncio pool to run on ``target``, ours first."""
    specs = [_ours_spec(), AioPoolSpec(LEAN, _build_lean),
             AioPoolSpec(STOCK, _build_stock)]
    if target.kind == 'postgres':
        specs += [AioPoolSpec(PSYCOPG, _build_psycopg),
                  AioPoolSpec(ASYNCPG, _build_asyncpg)]
    return specs

