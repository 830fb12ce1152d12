"""The pools under test, behind one small interface (``Adapter``).

Each pool is built from the same ``Settings`` (in our keywords); its
builder maps them to the pool's own: psycopg_pool's ``min_size``,
``max_size`` and ``max_lifetime``; peewee's pool has no minimum and no
keepalive, so it gets only what it has. The pools:

- ``playhouse_pool``: this package, through its public API only;
- ``baseline``: another copy of playhouse_pool (``--baseline``), for A/B;
- ``ours+collector``: ours with a metrics collector attached and
  collecting (``--collector``, ``collectors.py``), in S1 and S2;
- ``lean``: the lean reference (``lean.py``), in S1 and S2;
- ``peewee``: peewee's own ``playhouse.pool``;
- ``psycopg_pool``: for a Postgres URL, when installed (else the report
  says it was left out, and what to install: ``left_out``).
"""
from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

from playhouse import pool as peewee_pool

from .. import backends as ours
from .lean import LEAN_CLASSES
from .target import BENCH_INSTALL, Target

try:
    import psycopg_pool
    _PSYCOPG_POOL_ERROR = ''
except ImportError as exc:               # optional: Postgres comparison only
    psycopg_pool = None  # type: ignore[assignment]
    _PSYCOPG_POOL_ERROR = str(exc)

OURS, BASELINE, LEAN = 'playhouse_pool', 'baseline', 'lean'
PEEWEE, PSYCOPG = 'peewee', 'psycopg_pool'
COLLECTED = 'ours+collector'        # --collector (benchmark/collectors.py)
# Run in S1 and S2 only (the hot path).
HOT_PATH_ONLY = (LEAN, COLLECTED)
SQL = 'SELECT 1'
CHECKOUT_TIMEOUT = 30.0     # "wait, don't fail": every checkout may wait

Query = Callable[[], None]


@dataclass(frozen=True)
class Settings:
    """What a scenario asks of every pool, in playhouse_pool's keywords.

    ``min_connections`` is psycopg_pool's ``min_size`` (peewee's pool has
    none), ``stale_timeout`` psycopg_pool's ``max_lifetime`` (None: its
    default, an hour), ``ping_after`` is ours only (None: our default).
    """
    max_connections: int
    min_connections: int = 0
    stale_timeout: Optional[float] = None
    ping_after: Optional[float] = None


# -- Adapters: the scenarios only see checkout/query/checkin/close -----------

class Adapter(Protocol):
    def checkout(self) -> Any: ...
    def query(self, handle: Any) -> None: ...
    def checkin(self, handle: Any) -> None: ...
    def close(self) -> None: ...

    def cycle(self) -> Query:
        """One checkout, query and check-in as a user of the pool writes
        it, with nothing of the adapter's in between (S1 times this)."""
        ...

    def held(self, handle: Any) -> Query:
        """The same query on a connection checked out already (S1's
        floor), written the same way."""
        ...


class PeeweeAdapter:
    """A peewee-style pooled database: connect() checks out, close() in."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def checkout(self) -> None:
        self.db.connect()

    def query(self, handle: None) -> None:
        self.db.execute_sql(SQL).fetchone()

    def checkin(self, handle: None) -> None:
        self.db.close()

    def cycle(self) -> Query:
        connect, execute_sql, close = (self.db.connect, self.db.execute_sql,
                                       self.db.close)

        def op() -> None:
            connect()
            execute_sql(SQL).fetchone()
            close()
        return op

    def held(self, handle: None) -> Query:
        execute_sql = self.db.execute_sql

        def op() -> None:
            execute_sql(SQL).fetchone()
        return op

    def close(self) -> None:
        self.db.close_all()


class PsycopgPoolAdapter:
    """psycopg_pool through its own ``with pool.connection() as conn``."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def checkout(self) -> Tuple[Any, Any]:
        context = self.pool.connection(timeout=CHECKOUT_TIMEOUT)
        return context, context.__enter__()

    def query(self, handle: Tuple[Any, Any]) -> None:
        handle[1].execute(SQL).fetchone()

    def checkin(self, handle: Tuple[Any, Any]) -> None:
        handle[0].__exit__(None, None, None)

    def cycle(self) -> Query:
        connection = self.pool.connection

        def op() -> None:
            with connection(timeout=CHECKOUT_TIMEOUT) as conn:
                conn.execute(SQL).fetchone()
        return op

    def held(self, handle: Tuple[Any, Any]) -> Query:
        execute = handle[1].execute

        def op() -> None:
            execute(SQL).fetchone()
        return op

    def close(self) -> None:
        self.pool.close(timeout=5)


# -- Builders -----------------------------------------------------------------

Builder = Callable[[Target, Settings], Adapter]


@dataclass(frozen=True)
class PoolSpec:
    name: str
    build: Builder


def _classes(module: Any) -> Dict[str, Any]:
    return {'postgres': module.PooledPostgresqlDatabase,
            'mysql': module.PooledMySQLDatabase,
            'sqlite': module.PooledSqliteDatabase}


def _playhouse_pool(module: Any) -> Builder:
    """Ours, or a baseline copy of it: every setting has its keyword."""
    classes = _classes(module)

    def build(target: Target, settings: Settings) -> Adapter:
        extra = ({} if settings.ping_after is None
                 else {'ping_after': settings.ping_after})
        db = classes[target.kind](
            target.database, max_connections=settings.max_connections,
            min_connections=settings.min_connections,
            stale_timeout=settings.stale_timeout, timeout=CHECKOUT_TIMEOUT,
            **extra, **target.pool_params)
        return PeeweeAdapter(db)
    return build


def _build_peewee(target: Target, settings: Settings) -> Adapter:
    db = _classes(peewee_pool)[target.kind](
        target.database, max_connections=settings.max_connections,
        stale_timeout=settings.stale_timeout, timeout=CHECKOUT_TIMEOUT,
        **target.pool_params)
    return PeeweeAdapter(db)


def _build_lean(target: Target, settings: Settings) -> Adapter:
    return PeeweeAdapter(LEAN_CLASSES[target.kind](
        target.database, max_connections=settings.max_connections,
        **target.pool_params))


def _build_psycopg_pool(target: Target, settings: Settings) -> Adapter:
    assert psycopg_pool is not None
    lifetime: Dict[str, Any] = ({} if settings.stale_timeout is None else
                                {'max_lifetime': settings.stale_timeout})
    # autocommit, as peewee's connections are: the same round trips per op.
    pool = psycopg_pool.ConnectionPool(
        target.conninfo(), min_size=settings.min_connections,
        max_size=settings.max_connections, timeout=CHECKOUT_TIMEOUT,
        kwargs={'autocommit': True}, open=True, **lifetime)
    return PsycopgPoolAdapter(pool)


def pool_specs(target: Target, baseline: Optional[ModuleType] = None
               ) -> List[PoolSpec]:
    """Every pool to run on ``target``, ours first."""
    specs = [PoolSpec(OURS, _playhouse_pool(ours))]
    if baseline is not None:
        specs.append(PoolSpec(BASELINE, _playhouse_pool(baseline)))
    specs += [PoolSpec(LEAN, _build_lean), PoolSpec(PEEWEE, _build_peewee)]
    if target.kind == 'postgres' and psycopg_pool is not None:
        specs.append(PoolSpec(PSYCOPG, _build_psycopg_pool))
    return specs


def left_out(target: Target) -> Dict[str, str]:
    """The pools that would run on ``target`` but cannot here, and why
    (saying what to install): the report names them, so that their rows
    and the targets against them are not missing unexplained."""
    if target.kind == 'postgres' and psycopg_pool is None:
        return {PSYCOPG: 'not installed (%s): %s' % (_PSYCOPG_POOL_ERROR,
                                                     BENCH_INSTALL)}
    return {}


# -- The A/B baseline ---------------------------------------------------------

_BASELINE_MODULE = '_playhouse_pool_baseline'


def load_baseline(path: str) -> ModuleType:
    """Import another copy of playhouse_pool from ``path``: the package
    directory itself, or a directory holding exactly one such package
    (e.g. the output of ``git archive REV playhouse_pool | tar -x -C
    DIR``). It is imported under a private name, so it need not be renamed;
    its imports must be relative (they are).

    Raises ValueError if ``path`` holds no such package, or several.
    """
    package = _package_dir(path)
    spec = importlib.util.spec_from_file_location(
        _BASELINE_MODULE, os.path.join(package, '__init__.py'),
        submodule_search_locations=[package])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[_BASELINE_MODULE] = module
    try:
        spec.loader.exec_module(module)
        _classes(module)
    except Exception as exc:
        del sys.modules[_BASELINE_MODULE]
        raise ValueError('cannot use %s as the baseline: %s: %s'
                         % (package, type(exc).__name__, exc)) from exc
    return module


def _package_dir(path: str) -> str:
    def is_pool_package(candidate: str) -> bool:
        return all(os.path.isfile(os.path.join(candidate, name))
                   for name in ('__init__.py', 'backends.py'))

    path = os.path.abspath(path)
    if is_pool_package(path):
        return path
    if not os.path.isdir(path):
        raise ValueError('baseline %s is not a directory' % path)
    found = sorted(d for d in os.listdir(path)
                   if is_pool_package(os.path.join(path, d)))
    if len(found) != 1:
        raise ValueError(
            'baseline %s is not a playhouse_pool package directory and '
            'holds %s (give the package directory itself)'
            % (path, 'none' if not found else 'several: ' + ', '.join(found)))
    return os.path.join(path, found[0])
