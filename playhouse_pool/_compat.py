"""The differences between peewee 3.17+ and 4.x, and nowhere else.

peewee 4 moved ``Psycopg3Database`` into ``playhouse.postgres_ext`` and
removed ``playhouse.sqlite_ext.SqliteExtDatabase``.
"""
from playhouse.postgres_ext import PostgresqlExtDatabase

try:                                    # peewee 4
    from playhouse.postgres_ext import Psycopg3Database
except ImportError:                     # peewee 3
    from playhouse.psycopg3_ext import Psycopg3Database

try:                                    # peewee 3
    from playhouse.sqlite_ext import SqliteExtDatabase
except ImportError:                     # peewee 4: SqliteDatabase has it all
    SqliteExtDatabase = None

__all__ = ['PostgresqlExtDatabase', 'Psycopg3Database', 'SqliteExtDatabase']
