"""The differences between peewee 3.17+ and 4.x, and nowhere else.

peewee 4 moved ``Psycopg3Database`` into ``playhouse.postgres_ext`` and
removed ``playhouse.sqlite_ext.SqliteExtDatabase``.
"""
import peewee
from playhouse.postgres_ext import PostgresqlExtDatabase

try:                                    # peewee 4
    from playhouse.postgres_ext import Psycopg3Database
except ImportError:                     # peewee 3
    from playhouse.psycopg3_ext import Psycopg3Database  # type: ignore

try:                                    # peewee 3
    from playhouse.sqlite_ext import SqliteExtDatabase
except ImportError:                     # peewee 4: plain SqliteDatabase has it all
    SqliteExtDatabase = None  # type: ignore

PEEWEE_MAJOR = int(peewee.__version__.split('.')[0])

__all__ = ['PostgresqlExtDatabase', 'Psycopg3Database', 'SqliteExtDatabase',
           'PEEWEE_MAJOR']
