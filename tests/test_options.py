"""Every pool keyword is validated when given; nothing changes on error."""
import pytest

import playhouse_pool as pp

BAD = [
    ('max_connections', -1, ValueError),
    ('max_connections', 2.5, TypeError),
    ('max_connections', '10', TypeError),
    ('max_connections', True, TypeError),
    ('min_connections', -1, ValueError),
    ('min_connections', None, TypeError),
    ('stale_timeout', -1, ValueError),
    ('stale_timeout', 'soon', TypeError),
    ('timeout', -0.5, ValueError),
    ('timeout', float('nan'), ValueError),
    ('idle_timeout', 0, ValueError),
    ('idle_timeout', -3, ValueError),
    ('ping_after', -1, ValueError),
    ('max_waiting', -2, ValueError),
    ('max_waiting', 1.5, TypeError),
    ('leak_timeout', 0, ValueError),
    ('reset_session', 'yes', TypeError),
]


@pytest.mark.parametrize('name, value, error', BAD,
                         ids=['%s=%r' % (n, v) for n, v, _ in BAD])
def test_constructor_rejects_bad_values_naming_the_keyword(
        tmp_path, name, value, error):
    with pytest.raises(error, match=name):
        pp.PooledSqliteDatabase(str(tmp_path / 'x.db'), **{name: value})


@pytest.mark.parametrize('name, value, error', BAD,
                         ids=['%s=%r' % (n, v) for n, v, _ in BAD])
def test_init_rejects_bad_values_and_changes_nothing(
        tmp_path, name, value, error):
    db = pp.PooledSqliteDatabase(None, max_connections=3)
    with pytest.raises(error, match=name):
        db.init(str(tmp_path / 'x.db'), **{name: value})
    assert db.deferred and db.database is None
    assert db._pool_options.max_connections == 3


def test_min_connections_above_max_is_refused(tmp_path):
    with pytest.raises(ValueError, match='min_connections'):
        pp.PooledSqliteDatabase(str(tmp_path / 'x.db'), max_connections=2,
                                min_connections=3)


def test_peewee_meanings_of_zero(tmp_path):
    db = pp.PooledSqliteDatabase(str(tmp_path / 'x.db'), max_connections=0,
                                 stale_timeout=0, timeout=0)
    options = db._pool_options
    assert options.max_connections is None          # unlimited
    assert options.stale_timeout is None            # off
    assert options.wait_seconds == float('inf')     # wait forever
    assert db.pool_stats()['max_connections'] == 0


def test_deferred_init_takes_pool_keywords(tmp_path):
    db = pp.PooledSqliteDatabase(None)
    db.init(str(tmp_path / 'x.db'), max_connections=7, timeout=3)
    assert db._pool_options.max_connections == 7
    db.connect()
    assert db.execute_sql('SELECT 1').fetchone()[0] == 1
    db.close()


@pytest.mark.parametrize('database', [':memory:', ''])
def test_sqlite_memory_database_is_refused_with_a_way_out(database):
    with pytest.raises(ValueError, match='cache=shared'):
        pp.PooledSqliteDatabase(database)


def test_sqlite_shared_memory_database_works_across_connections():
    db = pp.PooledSqliteDatabase('file:pp_shared?mode=memory&cache=shared',
                                 uri=True)
    db.connect()
    db.execute_sql('CREATE TABLE t (x INTEGER)')
    db.execute_sql('INSERT INTO t VALUES (1)')

    def other_connection_sees_it(_):
        with db.connection_context():
            return db.execute_sql('SELECT x FROM t').fetchone()[0]

    from conftest import run_threads
    assert run_threads(1, other_connection_sees_it) == [1]
    db.close_all()


def test_sqlite_connections_may_cross_threads(tmp_path):
    db = pp.PooledSqliteDatabase(str(tmp_path / 'x.db'))
    assert db.connect_params['check_same_thread'] is False


def test_repr_shows_no_password():
    db = pp.PooledPostgresqlDatabase('postgresql://app:hunter2@h/app')
    assert 'hunter2' not in repr(db)
    assert 'hunter2' not in str(db.pool_stats())
