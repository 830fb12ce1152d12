"""connect(url): the '+pool' URL schemes, on peewee's own URL parsing.

Our schemes live in our own table: peewee's ``playhouse.db_url.connect()``
keeps returning what it always did.
"""
from typing import Any, Dict, Type
from urllib.parse import unquote, urlparse

from playhouse.db_url import parseresult_to_dict

from ._options import KEYWORDS
from .backends import (PooledCockroachDatabase, PooledCySqliteDatabase,
                       PooledMariaDBConnectorDatabase,
                       PooledMySQLConnectorDatabase, PooledMySQLDatabase,
                       PooledPostgresqlDatabase, PooledPostgresqlExtDatabase,
                       PooledPsycopg3Database, PooledSqliteDatabase,
                       PooledSqliteExtDatabase)

# peewee 4's names (playhouse.db_url), each with '+pool'.
SCHEMES: Dict[str, Type[Any]] = {
    'cockroachdb+pool': PooledCockroachDatabase,
    'crdb+pool': PooledCockroachDatabase,
    'cysqlite+pool': PooledCySqliteDatabase,
    'mariadbconnector+pool': PooledMariaDBConnectorDatabase,
    'mysqlconnector+pool': PooledMySQLConnectorDatabase,
    'postgres+pool': PooledPostgresqlDatabase,
    'postgresql+pool': PooledPostgresqlDatabase,
    'postgresext+pool': PooledPostgresqlExtDatabase,
    'postgresqlext+pool': PooledPostgresqlExtDatabase,
    'psycopg3+pool': PooledPsycopg3Database,
    'mysql+pool': PooledMySQLDatabase,
    'sqlite+pool': PooledSqliteDatabase,
    'sqliteext+pool': PooledSqliteExtDatabase,
}

_BOOLEAN_KEYWORDS = ('reset_session',)


def connect(url: str, unquote_password: bool = False,
            unquote_user: bool = False, **connect_params: Any) -> Any:
    """A pooled database from a URL such as
    ``postgresql+pool://user@host:5432/app?max_connections=10&timeout=5``.

    Query values are converted as peewee does; the pool's keywords must be
    numbers (or ``none``), else ``ValueError`` names the keyword. Keywords
    passed to this function override the URL's.
    """
    parsed = urlparse(url)
    cls = SCHEMES.get(parsed.scheme)
    if cls is None:
        raise ValueError('Unsupported URL scheme %r for playhouse_pool; use '
                         'one of: %s.' % (parsed.scheme,
                                          ', '.join(sorted(SCHEMES))))
    # peewee 3.17's parser has no unquote_user: do that part here.
    kwargs = parseresult_to_dict(parsed, unquote_password)
    if unquote_user and 'user' in kwargs:
        kwargs['user'] = unquote(kwargs['user'])
    for name in KEYWORDS:
        if name in kwargs:
            kwargs[name] = _pool_value(name, kwargs[name])
    kwargs.update(connect_params)
    if not kwargs.get('database'):
        raise ValueError('The URL names no database: local databases take '
                         'three slashes (%s:///name), remote ones %s://host/'
                         'name.' % (parsed.scheme, parsed.scheme))
    return cls(**kwargs)


def _pool_value(name: str, value: Any) -> Any:
    """peewee converts digits, floats, none and booleans; the pool's numeric
    keywords also take what it leaves as text (negatives, exponents)."""
    if not isinstance(value, str):
        return value
    if name in _BOOLEAN_KEYWORDS:
        raise ValueError('%s in the URL must be true or false, got %r'
                         % (name, value))
    try:
        number = float(value)
    except ValueError:
        raise ValueError('%s in the URL must be a number, got %r'
                         % (name, value)) from None
    return int(number) if number.is_integer() and name in (
        'max_connections', 'min_connections', 'max_waiting') else number
