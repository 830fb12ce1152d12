"""The database under test: where to connect, parsed from ``--url``."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Tuple
from urllib.parse import urlparse

import peewee
from playhouse.db_url import parse as parse_url

_KINDS = {'postgres': 'postgres', 'postgresql': 'postgres',
          'postgresext': 'postgres', 'postgresqlext': 'postgres',
          'mysql': 'mysql', 'sqlite': 'sqlite', 'sqliteext': 'sqlite'}
_DEFAULT_PORTS = {'postgres': 5432, 'mysql': 3306}

# How to install every driver and pool the benchmark runs: the package's
# "bench" extra. By name, pip reads the extras of the installed
# playhouse-pool, from an index or a clone alike; by path, in a clone.
BENCH_INSTALL = ("pip install 'playhouse-pool[bench]' (in a clone: pip "
                 "install '.[bench]')")
# The driver peewee connects a target with: (what to call it, the modules
# peewee tries, in its order).
_DRIVERS = {'postgres': ('psycopg2', ('psycopg2',)),
            'mysql': ('pymysql (or mysqlclient)', ('pymysql', 'MySQLdb'))}

PLAIN_CLASSES = {'postgres': peewee.PostgresqlDatabase,
                 'mysql': peewee.MySQLDatabase,
                 'sqlite': peewee.SqliteDatabase}


@dataclass(frozen=True)
class Target:
    """The database under test: its kind and peewee connect parameters."""
    url: str
    kind: str                       # 'postgres', 'mysql' or 'sqlite'
    database: str
    params: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_url(cls, url: str) -> Target:
        """Parse a peewee database URL (``+pool`` schemes too).

        Raises ValueError for an unsupported scheme or an in-memory SQLite
        database (its connections could not be shared by a pool)."""
        scheme = urlparse(url).scheme.split('+')[0]
        kind = _KINDS.get(scheme)
        if kind is None:
            raise ValueError('unsupported URL scheme %r (use postgresql://, '
                             'mysql:// or sqlite:///)' % scheme)
        params = parse_url(url.replace(scheme + '+pool://', scheme + '://'))
        database = params.pop('database')
        if kind == 'sqlite' and database in ('', ':memory:'):
            raise ValueError('a pooled SQLite database must be a file')
        return cls(url, kind, database, params)

    @property
    def networked(self) -> bool:
        return self.kind != 'sqlite'

    @property
    def address(self) -> Tuple[str, int]:
        return (self.params.get('host', '127.0.0.1'),
                int(self.params.get('port', _DEFAULT_PORTS[self.kind])))

    @property
    def pool_params(self) -> Dict[str, Any]:
        # Pooled SQLite connections move between threads.
        extra = {'check_same_thread': False} if self.kind == 'sqlite' else {}
        return {**self.params, **extra}

    def via(self, port: int) -> Target:
        """The same database, reached through a proxy on ``port``."""
        return replace(self, params={**self.params, 'host': '127.0.0.1',
                                     'port': port})

    def conninfo(self) -> str:
        """A libpq connection string (psycopg_pool's form)."""
        import psycopg
        names = {'host': 'host', 'port': 'port', 'user': 'user',
                 'password': 'password'}
        given = {names[k]: v for k, v in self.params.items() if k in names}
        return psycopg.conninfo.make_conninfo(dbname=self.database, **given)


def check_driver(target: Target) -> None:
    """ImportError naming what to install if peewee has no driver for
    ``target`` (peewee's own error would only say "driver not found")."""
    if target.kind not in _DRIVERS:
        return
    name, modules = _DRIVERS[target.kind]
    for module in modules:
        try:
            importlib.import_module(module)
            return
        except ImportError as exc:
            error = exc
    raise ImportError('--url %s:// needs %s, not installed: %s'
                      % (urlparse(target.url).scheme, name, BENCH_INSTALL)
                      ) from error


def check_reachable(target: Target) -> None:
    """Connect once, plainly: a wrong URL fails here, at once, rather than
    in every scenario after the pools' connect retries."""
    db = PLAIN_CLASSES[target.kind](target.database, **target.params)
    db.connect()
    db.close()
