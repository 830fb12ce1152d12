"""A checkout's first statement is its liveness check (recovery.py): on a
connection that died where no probe could see it, it runs again, once, on
another connection, only where the driver's error proves it never ran.

The kill window is made to last where a test needs it to go one way: the
connection dies after its checkout (no probe can see that), or the probe is
blinded (``unseen``), as it is to a kill the server has not acted on yet.
Postgres connections die by a waited ``pg_terminate_backend``; MySQL ones by
a reset through the proxy (MariaDB's ``KILL`` closes the socket before it
returns, which the probe sees, and an EOF proves nothing: see recovery.py).
"""
import logging
import threading

import peewee
import pytest
from playhouse.shortcuts import ReconnectMixin

from conftest import (DATABASE_ERRORS, MySQLBackend, Psycopg2Backend,
                      Psycopg3Backend, _backend, wait_until)
from test_housekeeping import open_idle
from playhouse_pool import _probe, recovery

TRIALS = 50

# The drivers with a rule for what proves a statement never ran (recovery.py);
# on the others a first statement's error is raised as before.
RECOVERING = [Psycopg2Backend, Psycopg3Backend, MySQLBackend]


@pytest.fixture(params=RECOVERING, ids=[b.name for b in RECOVERING])
def server_backend(request, tmp_path):
    yield from _backend(request.param, tmp_path)


def qualified(backend, name):
    """A name as the admin connection sees it (MySQL tests have a
    database of their own)."""
    return name if backend.server == 'postgres' else '%s.%s' % (
        backend.tag, name)


@pytest.fixture
def table(server_backend):
    """A table ``(n INTEGER)`` of this test's own."""
    backend = server_backend
    if backend.server == 'mysql':
        backend.admin_query('CREATE DATABASE IF NOT EXISTS %s' % backend.tag)
    name = backend.tag + '_t'
    backend.admin_query('CREATE TABLE %s (n INTEGER)' % qualified(backend,
                                                                  name))
    yield name
    if backend.server == 'postgres':
        backend.admin_query('DROP TABLE IF EXISTS %s' % name)


def rows(backend, table):
    """(rows, distinct values of n), as the server has them committed."""
    return tuple(backend.admin_query(
        'SELECT COUNT(*), COUNT(DISTINCT n) FROM %s'
        % qualified(backend, table))[0])


@pytest.fixture
def counter(server_backend):
    """A sequence and (statement that draws from it then fails for an SQL
    reason, how many values have been drawn): the statement's runs, counted
    by the server outside any transaction."""
    backend = server_backend
    name = backend.tag + '_s'
    if backend.server == 'postgres':
        backend.admin_query('CREATE SEQUENCE %s' % name)
        failing = "SELECT nextval('%s') / 0" % name

        def drawn():
            value, called = backend.admin_query(
                'SELECT last_value, is_called FROM %s' % name)[0]
            return value if called else 0
    else:
        backend.admin_query('CREATE DATABASE IF NOT EXISTS %s' % backend.tag)
        backend.admin_query('CREATE SEQUENCE %s' % qualified(backend, name))
        failing = 'SELECT NEXTVAL(%s), (SELECT 1 UNION SELECT 2)' % name
        drawn_before = [0]

        def drawn():
            # Draws one more itself; values are consecutive across sessions.
            value = backend.admin_query(
                'SELECT NEXTVAL(%s)' % qualified(backend, name))[0][0]
            drawn_before[0] += 1
            return value - drawn_before[0]
    yield failing, drawn
    if backend.server == 'postgres':
        backend.admin_query('DROP SEQUENCE IF EXISTS %s' % name)


@pytest.fixture
def unseen(proxied, monkeypatch):  # noqa: F811
    """(backend, proxy, make_db, die): ``die()`` ends every connection of
    the test's databases so that the driver can prove it at the next
    statement: Postgres backends are terminated (a FATAL 57P01 waits in each
    socket), MySQL connections are reset. The readability probe is blinded,
    so an idle connection killed so is handed out as one the server has not
    acted on yet would be."""
    backend, proxy, make_db = proxied
    monkeypatch.setattr(_probe.Probe, 'readable', lambda self: False)

    def die():
        if backend.server == 'postgres':
            for pid in backend.server_ids():
                backend.kill(pid)
        else:
            proxy.reset_all()
            wait_until(lambda: proxy.connections == 0, what='the resets')

    return backend, proxy, make_db, die


def one_idle(db):
    """Open one connection and leave it idle in the pool."""
    db.connect()
    db.close()


def insert(db, table, n=1):
    db.execute_sql('INSERT INTO %s (n) VALUES (%d)' % (table, n))


# -- The scenario: kills the server has not acted on yet ------------

def test_unwaited_kills_never_reach_the_user(server_backend):
    db = server_backend.make_db(max_connections=2, timeout=10)
    with db.connection_context():
        victim = server_backend.conn_id(db)
    for _ in range(TRIALS):
        server_backend.kill_now(victim)      # the server may not have acted
        with db.connection_context():
            assert db.execute_sql('SELECT 1').fetchone()[0] == 1
            survivor = server_backend.conn_id(db)
        assert survivor != victim
        victim = survivor
    stats = db.pool_stats()
    # Each victim was retired once: by the probe, or at its first statement.
    assert (stats['created'], stats['closed']) == (TRIALS + 1, TRIALS)
    assert stats['recovered'] <= TRIALS


def test_an_insert_first_after_an_unwaited_kill_lands_exactly_once(
        server_backend, table):
    db = server_backend.make_db(max_connections=2, timeout=10)
    with db.connection_context():
        victim = server_backend.conn_id(db)
    for n in range(TRIALS):
        server_backend.kill_now(victim)
        with db.connection_context():
            insert(db, table, n)             # autocommit, the first statement
            victim = server_backend.conn_id(db)
    assert rows(server_backend, table) == (TRIALS, TRIALS)


def test_inside_atomic_a_dead_connection_raises_and_nothing_is_committed(
        server_backend, table):
    db = server_backend.make_db(max_connections=2)
    one_idle(db)
    db.connect()
    with pytest.raises(DATABASE_ERRORS):
        with db.atomic():
            insert(db, table)
            server_backend.kill_now(server_backend.conn_id(db))
            insert(db, table, 2)
    db.close()
    assert rows(server_backend, table) == (0, 0)
    assert db.pool_stats()['recovered'] == 0


def test_a_first_statement_inside_manual_commit_is_not_run_again(
        unseen, table):
    """A checkout inside a block that holds a transaction open (here
    ``manual_commit()``, entered while closed): not watched."""
    backend, proxy, make_db, die = unseen
    db = make_db(max_connections=2)
    one_idle(db)
    die()
    with db.manual_commit():
        with pytest.raises(DATABASE_ERRORS):
            insert(db, table)                # autoconnects, inside the block
    db.close()
    assert rows(backend, table) == (0, 0)
    assert db.pool_stats()['recovered'] == 0


def test_a_statement_that_fails_for_an_sql_reason_is_never_run_again(
        server_backend, counter):
    failing, drawn = counter
    db = server_backend.make_db(max_connections=2)
    with db.connection_context():
        held = server_backend.conn_id(db)
    with db.connection_context():
        with pytest.raises(DATABASE_ERRORS):
            db.execute_sql(failing)          # the checkout's first statement
        assert server_backend.conn_id(db) == held
    assert drawn() == 1
    assert db.pool_stats()['recovered'] == 0


# -- Deaths no probe sees: which are run again -------------------------------

def test_a_connection_dead_after_its_checkout_is_replaced_at_first_use(
        unseen, table):
    backend, proxy, make_db, die = unseen
    db = make_db(max_connections=2)
    one_idle(db)
    victims = backend.server_ids()
    db.connect()
    die()
    insert(db, table)
    assert backend.conn_id(db) not in victims
    db.close()
    assert rows(backend, table) == (1, 1)
    stats = db.pool_stats()
    assert (stats['recovered'], stats['created'], stats['closed'],
            stats['open']) == (1, 2, 1, 1)


def test_the_begin_of_atomic_is_a_first_statement_too(unseen, table):
    backend, proxy, make_db, die = unseen
    db = make_db(max_connections=2)
    one_idle(db)
    die()
    with db.atomic():                        # autoconnects, then BEGIN
        insert(db, table)
    db.close()
    assert rows(backend, table) == (1, 1)
    assert db.pool_stats()['recovered'] == 1


def test_peewee_blocks_go_on_on_the_replacement(unseen, table):
    backend, proxy, make_db, die = unseen
    db = make_db(max_connections=2)
    one_idle(db)
    die()
    with db:                                 # connect, then atomic()
        insert(db, table)
        assert db.in_transaction()
    assert db.is_closed()
    assert rows(backend, table) == (1, 1)
    stats = db.pool_stats()
    assert (stats['recovered'], stats['in_use'], stats['open']) == (1, 0, 1)


def test_a_connection_close_all_took_before_its_first_use_is_replaced(
        server_backend):
    db = server_backend.make_db(max_connections=2)
    one_idle(db)
    checked_out, closed = threading.Event(), threading.Event()
    result = []

    def holder():
        with db.connection_context():
            checked_out.set()
            closed.wait(10)
            result.append(db.execute_sql('SELECT 1').fetchone()[0])

    thread = threading.Thread(target=holder)
    thread.start()
    assert checked_out.wait(10)
    assert db.close_all() == 1
    closed.set()
    thread.join(10)
    assert result == [1]
    assert db.pool_stats()['recovered'] == 1


def test_only_the_first_statement_of_a_checkout_is_watched(unseen, table):
    backend, proxy, make_db, die = unseen
    db = make_db(max_connections=2)
    one_idle(db)
    db.connect()
    assert db.execute_sql('SELECT 1').fetchone()[0] == 1
    die()
    with pytest.raises(DATABASE_ERRORS):
        insert(db, table)
    db.close()
    assert rows(backend, table) == (0, 0)
    assert db.pool_stats()['recovered'] == 0


def test_a_new_connections_first_statement_is_not_watched(unseen, table):
    backend, proxy, make_db, die = unseen
    db = make_db(max_connections=2)
    db.connect()                             # opened just now
    die()
    with pytest.raises(DATABASE_ERRORS):
        insert(db, table)
    db.close()
    assert rows(backend, table) == (0, 0)
    assert db.pool_stats()['recovered'] == 0


def test_a_statement_that_reached_the_server_is_not_run_again(
        proxied, table):  # noqa: F811
    backend, proxy, make_db = proxied
    db = make_db(max_connections=2)
    one_idle(db)
    db.connect()
    proxy.lose_replies()             # the server runs it, the reply is lost
    with pytest.raises(DATABASE_ERRORS):
        insert(db, table)
    db.close()
    assert rows(backend, table) == (1, 1)
    assert db.pool_stats()['recovered'] == 0


def test_a_reset_is_proof_only_for_a_driver_that_reports_the_failed_send(
        proxied, table):  # noqa: F811
    """pymysql says its send failed (2006); libpq reports a failed send as
    it does a reply lost after the statement ran, so psycopg's error is
    raised."""
    backend, proxy, make_db = proxied
    db = make_db(max_connections=2)
    one_idle(db)
    db.connect()
    proxy.reset_all()
    wait_until(lambda: proxy.connections == 0, what='the reset')
    if backend.server == 'mysql':
        insert(db, table)
        expected = ((1, 1), 1)
    else:
        with pytest.raises(DATABASE_ERRORS):
            insert(db, table)
        expected = ((0, 0), 0)
    db.close()
    assert (rows(backend, table), db.pool_stats()['recovered']) == expected


@pytest.mark.parametrize('server_backend', [Psycopg2Backend, Psycopg3Backend],
                         indirect=True)
@pytest.mark.parametrize('sql', [
    'DO $$ BEGIN PERFORM 1; END $$',         # may COMMIT part-way
    'SELECT 1; SELECT 2',                    # several statements
])
def test_a_postgres_statement_that_can_commit_part_way_is_not_run_again(
        unseen, sql):
    backend, proxy, make_db, die = unseen
    db = make_db(max_connections=2)
    one_idle(db)
    db.connect()
    die()
    with pytest.raises(DATABASE_ERRORS):
        db.execute_sql(sql)
    db.close()
    assert db.pool_stats()['recovered'] == 0


def test_when_no_other_connection_can_be_had_the_checkouts_error_is_raised(
        unseen, table):
    backend, proxy, make_db, die = unseen
    db = make_db(max_connections=2)
    one_idle(db)
    db.connect()
    die()
    proxy.refuse = True                      # no new connection either
    with pytest.raises(DATABASE_ERRORS) as info:
        insert(db, table)
    assert info.value.__context__ is not None    # the dead one's error
    assert db.is_closed()
    stats = db.pool_stats()
    assert (stats['recovered'], stats['open'], stats['in_use']) == (0, 0, 0)


def test_healthy_first_statements_send_nothing_but_themselves(
        proxied):  # noqa: F811
    backend, proxy, make_db = proxied
    db = make_db(max_connections=1)
    db.connect()
    before = proxy.bytes_to_server
    db.execute_sql('SELECT 1')               # on a connection held open
    statement = proxy.bytes_to_server - before
    db.close()
    before = proxy.bytes_to_server
    with db.connection_context():            # the same one, from the pool
        db.execute_sql('SELECT 1')
    assert proxy.bytes_to_server - before == statement
    assert db.pool_stats()['created'] == 1


def test_recovery_is_logged_at_info_without_secrets_or_the_statement(
        unseen, table, caplog):
    backend, proxy, make_db, die = unseen
    secret = 's3cret-recovery-pw'
    kwargs = {'password': secret} if backend.server == 'postgres' else {}
    db = make_db(max_connections=2, **kwargs)   # trust auth ignores it
    one_idle(db)
    db.connect()
    die()
    caplog.set_level(logging.INFO, logger='playhouse_pool')
    db.execute_sql('INSERT INTO %s (n) VALUES (424242)' % table)
    db.close()
    lines = [r.getMessage() for r in caplog.records
             if r.name == 'playhouse_pool.recovery'
             and r.levelno == logging.INFO]
    assert len(lines) == 1 and 'running the statement' in lines[0]
    assert secret not in caplog.text and '424242' not in caplog.text


# -- With peewee's ReconnectMixin -------------------------------------------

# What ReconnectMixin retries here: its own list (MySQL's lost and gone-away
# connections) plus Postgres' dead-connection errors and, to make the retry
# of the pool fail for sure, the counter's SQL error.
_RETRIED_ERRORS = (
    (peewee.OperationalError, 'terminating connection'),
    (peewee.OperationalError, 'server closed the connection'),
    (peewee.InterfaceError, 'connection already closed'),
    (peewee.DataError, 'division by zero'),
    (peewee.OperationalError, '1242'),
)


def _driver_classes():
    # peewee 3 passes psycopg 3's errors through unwrapped, and
    # ReconnectMixin matches exact classes.
    try:
        from psycopg import errors
    except ImportError:
        return ()
    return ((errors.AdminShutdown, 'terminating connection'),
            (errors.DivisionByZero, 'division by zero'))


def reconnecting(backend, outside):
    """The backend's pooled class with ReconnectMixin before it (the order
    peewee documents) or between the pool and the peewee database."""
    pooled, database = backend.db_class.__bases__
    bases = ((ReconnectMixin, backend.db_class) if outside
             else (pooled, ReconnectMixin, database))
    errors = ReconnectMixin.reconnect_errors + _RETRIED_ERRORS
    return type('Reconnecting', bases,
                {'reconnect_errors': errors + _driver_classes()})


def test_reconnect_mixin_outside_the_pool_leaves_a_recovered_statement_alone(
        unseen, table):
    backend, proxy, make_db, die = unseen
    db = make_db(reconnecting(backend, outside=True), max_connections=2)
    one_idle(db)
    db.connect()
    die()
    insert(db, table)
    db.close()
    assert rows(backend, table) == (1, 1)
    stats = db.pool_stats()
    # One to open, one for the statement, one to run it again.
    assert (stats['recovered'], stats['checkouts']) == (1, 3)


def test_reconnect_mixin_does_not_retry_what_the_pool_ran_again(
        unseen, counter):
    backend, proxy, make_db, die = unseen
    failing, drawn = counter
    db = make_db(reconnecting(backend, outside=True), max_connections=2)
    one_idle(db)
    db.connect()
    die()
    with pytest.raises(DATABASE_ERRORS):
        db.execute_sql(failing)      # dead, then the SQL error on the new one
    db.close()
    assert drawn() == 1
    stats = db.pool_stats()
    assert (stats['recovered'], stats['checkouts']) == (1, 3)


def test_the_pool_does_not_run_again_what_reconnect_mixin_retries(
        unseen, table):
    backend, proxy, make_db, die = unseen
    db = make_db(reconnecting(backend, outside=True), max_connections=3)
    open_idle(db, 2)
    db.connect()
    assert db.execute_sql('SELECT 1').fetchone()[0] == 1
    die()                # this connection and the idle one the probe misses
    # Not a first statement: ReconnectMixin retries it on the idle one, dead
    # too; the pool lets that error be.
    with pytest.raises(DATABASE_ERRORS):
        insert(db, table)
    db.close()
    assert rows(backend, table) == (0, 0)
    stats = db.pool_stats()
    assert (stats['recovered'], stats['checkouts']) == (0, 4)


def test_reconnect_mixin_inside_the_pool_retries_alone(unseen, table):
    backend, proxy, make_db, die = unseen
    db = make_db(reconnecting(backend, outside=False), max_connections=2)
    one_idle(db)
    db.connect()
    die()
    insert(db, table)                        # ReconnectMixin's retry
    db.close()
    assert rows(backend, table) == (1, 1)
    stats = db.pool_stats()
    assert (stats['recovered'], stats['checkouts']) == (0, 3)


def test_a_failed_retry_of_reconnect_mixin_inside_is_not_run_again(
        unseen, table):
    backend, proxy, make_db, die = unseen
    db = make_db(reconnecting(backend, outside=False), max_connections=3)
    open_idle(db, 2)
    db.connect()
    die()                # this connection and the idle one the probe misses
    with pytest.raises(DATABASE_ERRORS):
        insert(db, table)    # ReconnectMixin retries it on the idle one
    db.close()
    assert rows(backend, table) == (0, 0)
    stats = db.pool_stats()
    assert (stats['recovered'], stats['checkouts'], stats['in_use']) == (
        0, 4, 0)


# -- The rule's parts ---------------------------------------------------------

@pytest.mark.parametrize('sql, one', [
    ('SELECT 1', True),
    ('  insert into t values (1);', True),
    ('WITH x AS (SELECT 1) UPDATE t SET n = 2', True),
    ('BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE', True),
    (None, True),                            # peewee's own BEGIN
    ('CALL refresh()', False),               # a procedure may COMMIT
    ('DO $$ BEGIN COMMIT; END $$', False),
    ('VACUUM t', False),
    ('CREATE INDEX CONCURRENTLY i ON t (n)', False),
    ('SELECT 1; SELECT 2', False),
    ("INSERT INTO t VALUES (';')", False),   # in doubt: not run again
    ('/* a comment */ SELECT 1', False),
    (b'SELECT 1', False),
])
def test_a_postgres_fatal_proves_nothing_for_what_may_commit_part_way(
        sql, one):
    assert recovery._one_transaction(sql) is one
