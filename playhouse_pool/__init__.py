"""Connection pooling for peewee: drop-in pooled databases for Postgres
(psycopg2 and psycopg 3), MySQL/MariaDB (pymysql) and SQLite."""
from .backends import (PooledMySQLDatabase, PooledPostgresqlDatabase,
                       PooledPostgresqlExtDatabase, PooledPsycopg3Database,
                       PooledSqliteDatabase, PooledSqliteExtDatabase)
from .db_url import connect
from .errors import MaxConnectionsExceeded, PoolClosedError
from .pool import PooledDatabase

__version__ = '0.1.0'

__all__ = [
    'MaxConnectionsExceeded', 'PoolClosedError', 'PooledDatabase',
    'PooledMySQLDatabase', 'PooledPostgresqlDatabase',
    'PooledPostgresqlExtDatabase', 'PooledPsycopg3Database',
    'PooledSqliteDatabase', 'PooledSqliteExtDatabase', 'connect',
    '__version__',
]
