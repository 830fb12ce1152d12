"""Connection pooling for peewee: drop-in pooled databases for Postgres
(psycopg2, psycopg 3, CockroachDB), MySQL/MariaDB (pymysql, mysqlclient,
mysql-connector, MariaDB Connector/Python) and SQLite (sqlite3, cysqlite)."""
from .backends import (PooledCockroachDatabase, PooledCSqliteExtDatabase,
                       PooledCySqliteDatabase,
                       PooledMariaDBConnectorDatabase,
                       PooledMySQLConnectorDatabase, PooledMySQLDatabase,
                       PooledPostgresqlDatabase, PooledPostgresqlExtDatabase,
                       PooledPsycopg3Database, PooledSqliteDatabase,
                       PooledSqliteExtDatabase)
from .db_url import connect
from .errors import MaxConnectionsExceeded, PoolClosedError
from .pool import PooledDatabase

__version__ = '0.2.0'

__all__ = [
    'MaxConnectionsExceeded', 'PoolClosedError', 'PooledCockroachDatabase',
    'PooledCSqliteExtDatabase',
    'PooledCySqliteDatabase', 'PooledDatabase',
    'PooledMariaDBConnectorDatabase', 'PooledMySQLConnectorDatabase',
    'PooledMySQLDatabase', 'PooledPostgresqlDatabase',
    'PooledPostgresqlExtDatabase', 'PooledPsycopg3Database',
    'PooledSqliteDatabase', 'PooledSqliteExtDatabase', 'connect',
    '__version__',
]
