"""The differences between peewee 3.17+ and 4.x, and nowhere else.

peewee 4 moved ``Psycopg3Database`` into ``playhouse.postgres_ext``,
removed ``playhouse.sqlite_ext.SqliteExtDatabase`` (and with it peewee 3's
C-accelerated ``CSqliteExtDatabase``) and added
``playhouse.cysqlite_ext`` (which itself fails to import without the
``cysqlite`` package). A database class missing here is replaced by a
stand-in that raises ``ImproperlyConfigured`` when it is built, saying what
is missing: ``import playhouse_pool`` works on every supported peewee.
"""
from typing import Any, Type

from peewee import ImproperlyConfigured, SqliteDatabase
from playhouse.cockroachdb import CockroachDatabase
from playhouse.mysql_ext import (MariaDBConnectorDatabase,
                                 MySQLConnectorDatabase)
from playhouse.postgres_ext import PostgresqlExtDatabase

try:                                    # peewee 4
    from playhouse.postgres_ext import Psycopg3Database
except ImportError:                     # peewee 3
    from playhouse.psycopg3_ext import Psycopg3Database

try:                                    # peewee 3
    from playhouse.sqlite_ext import SqliteExtDatabase
except ImportError:                     # peewee 4: SqliteDatabase has it all
    SqliteExtDatabase = None


def _unavailable(base: Type[Any], name: str, reason: str) -> Type[Any]:
    """A stand-in for peewee's class ``name`` that cannot be used here."""
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        raise ImproperlyConfigured('%s is not available: %s'
                                   % (type(self).__name__, reason))
    return type(name, (base,), {'__init__': __init__,
                                '__doc__': 'Unavailable: %s' % reason})


try:                                    # peewee 3 with its C extension
    from playhouse.sqlite_ext import CSqliteExtDatabase
except ImportError:
    CSqliteExtDatabase = _unavailable(
        SqliteDatabase, 'CSqliteExtDatabase',
        "it needs peewee 3 built with its C extension (playhouse._sqlite_ext)"
        '; on peewee 4 use PooledSqliteDatabase')

try:
    from playhouse.cysqlite_ext import CySqliteDatabase
except ImportError as exc:
    # peewee 3 has no cysqlite_ext; peewee 4's raises without cysqlite.
    import peewee
    CySqliteDatabase = _unavailable(
        SqliteDatabase, 'CySqliteDatabase',
        'it needs peewee 4 (installed: %s) and the cysqlite package '
        "(pip install 'playhouse-pool[cysqlite]'); importing "
        'playhouse.cysqlite_ext failed: %s'
        % (getattr(peewee, '__version__', '?'), exc))

__all__ = ['CSqliteExtDatabase', 'CockroachDatabase', 'CySqliteDatabase',
           'MariaDBConnectorDatabase', 'MySQLConnectorDatabase',
           'PostgresqlExtDatabase', 'Psycopg3Database', 'SqliteExtDatabase']
