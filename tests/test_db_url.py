"""connect(url): the '+pool' schemes."""
import peewee
import pytest
from playhouse import db_url as peewee_db_url

import playhouse_pool as pp


@pytest.mark.parametrize('scheme, cls', [
    ('postgres+pool', pp.PooledPostgresqlDatabase),
    ('postgresql+pool', pp.PooledPostgresqlDatabase),
    ('postgresext+pool', pp.PooledPostgresqlExtDatabase),
    ('postgresqlext+pool', pp.PooledPostgresqlExtDatabase),
    ('psycopg3+pool', pp.PooledPsycopg3Database),
    ('mysql+pool', pp.PooledMySQLDatabase),
    ('sqlite+pool', pp.PooledSqliteDatabase),
    ('sqliteext+pool', pp.PooledSqliteExtDatabase),
    ('mysqlconnector+pool', pp.PooledMySQLConnectorDatabase),
    ('mariadbconnector+pool', pp.PooledMariaDBConnectorDatabase),
    ('cockroachdb+pool', pp.PooledCockroachDatabase),
    ('crdb+pool', pp.PooledCockroachDatabase),
])
def test_each_scheme_gives_our_class(scheme, cls):
    db = pp.connect('%s://u@h/app' % scheme)
    assert type(db) is cls
    assert db.database == 'app'


def test_query_values_are_converted_for_the_pool():
    db = pp.connect('postgresql+pool://u@h/app?max_connections=10'
                    '&stale_timeout=300&timeout=2.5&ping_after=none'
                    '&reset_session=true&connect_timeout=3')
    o = db._pool_options
    assert (o.max_connections, o.stale_timeout, o.timeout) == (10, 300, 2.5)
    assert o.ping_after is None and o.reset_session is True
    assert db.connect_params['connect_timeout'] == 3
    assert 'max_connections' not in db.connect_params


@pytest.mark.parametrize('query, message', [
    ('max_connections=lots', 'max_connections'),
    ('max_connections=-1', 'max_connections'),
    ('timeout=soon', 'timeout'),
    ('stale_timeout=-5', 'stale_timeout'),
    ('min_connections=5&max_connections=2', 'min_connections'),
    ('reset_session=maybe', 'reset_session'),
])
def test_bad_pool_values_raise_naming_the_keyword(query, message):
    with pytest.raises((ValueError, TypeError), match=message):
        pp.connect('postgresql+pool://u@h/app?' + query)


def test_unknown_scheme_is_a_clear_error():
    with pytest.raises(ValueError, match="'oracle\\+pool'"):
        pp.connect('oracle+pool://u:secret@h/app')


def test_error_messages_do_not_show_the_password():
    with pytest.raises(ValueError) as info:
        pp.connect('nosuch://u:secret@h/app')
    assert 'secret' not in str(info.value)


def test_peewee_db_url_is_unchanged():
    pp.connect('postgresext+pool://u@h/app')
    db = peewee_db_url.connect('postgres+pool://u@h/app')
    assert not isinstance(db, pp.PooledDatabase)
    assert not any(issubclass(cls, pp.PooledDatabase)
                   for cls in peewee_db_url.schemes.values())


def test_quoted_user_and_password_are_unquoted_on_request():
    db = pp.connect('postgresql+pool://us%40er:p%40ss@h/app',
                    unquote_password=True, unquote_user=True)
    assert db.connect_params['user'] == 'us@er'
    assert db.connect_params['password'] == 'p@ss'


def test_url_without_a_database_is_refused():
    with pytest.raises(ValueError, match='no database'):
        pp.connect('postgresql+pool://host')


def test_every_pool_scheme_peewee_has_is_ours():
    theirs = {name for name in peewee_db_url.schemes if name.endswith('+pool')}
    assert theirs - set(pp.db_url.SCHEMES) == set()


def test_cysqlite_scheme_gives_our_class(tmp_path):
    try:
        db = pp.connect('cysqlite+pool:///%s' % (tmp_path / 'c.db'))
    except peewee.ImproperlyConfigured as exc:     # peewee 3, or no cysqlite
        assert 'cysqlite' in str(exc)
    else:
        assert type(db) is pp.PooledCySqliteDatabase
