"""A checkout's first statement is its liveness check (docs/design.rst,
rule 3).

The readability probe at checkout sees every death the server has already
announced (a FATAL message, an EOF). No probe sees one the server has not
acted on yet: ``pg_terminate_backend()`` returns before the backend has
handled its signal, and a server shutting down reaches its idle backends one
by one. A connection in that window passes the probe and fails its first
statement. So that statement is watched: if its error proves the server
never acted on it, the pool retires the connection, checks out another
(idle or new, as any checkout, within ``timeout``) and runs the statement
there, once. Everything else is raised exactly as before.

When a statement is run again (all of these, or it is not):

1. It is the first statement of a checkout, run through peewee
   (``execute_sql()``, so any query, or the ``BEGIN`` of ``atomic()`` and
   ``transaction()``, which peewee sends through ``begin()``), of a
   connection that sat idle in the pool. A new connection has just proven
   itself; and after a first statement, the session may hold state (``SET``,
   temporary tables) that another connection would not have.
2. No transaction is open: peewee's transaction stack is empty. (The
   ``BEGIN`` that opens one qualifies: nothing has run in it yet.)
3. The driver's error proves that the statement had no effect on the
   server (``_never_ran``, one hook per backend, rules below).
4. No outer retry is under way: a ``ReconnectMixin`` placed before the pool
   class retries from inside its ``except`` block, and the two never both
   retry one statement (see ``PooledDatabase.in_transaction``).

What proves that a statement had no effect (measured against PostgreSQL 15
and MariaDB 10.11 by killing connections at the moment of their checkout):

* Postgres, both drivers: a FATAL with SQLSTATE 57P01 (admin_shutdown:
  ``pg_terminate_backend``, a server shutdown, the postmaster gone) or 57P05
  (idle-session timeout). The backend raises those from an interrupt check;
  between the commit of a statement's transaction and the message that
  reports it complete there is none, so a FATAL that takes the place of
  that report means the transaction was rolled back. It proves nothing for
  a statement that commits part-way by itself (``CALL`` of a procedure that
  commits, ``VACUUM``, ``CREATE INDEX CONCURRENTLY``, several statements in
  one string), so only a single statement that opens with a keyword of a
  one-transaction statement qualifies (``_ONE_TRANSACTION``). psycopg 3
  raises ``AdminShutdown`` itself; psycopg2 keeps only libpq's last result
  (the EOF after the FATAL, no SQLSTATE), so for it the FATAL is read from
  the connection's error text: English server messages only (``lc_messages``
  C or en), other languages are never matched, so never retried.
* Postgres: a connection already closed when the statement came (psycopg2
  ``InterfaceError``, psycopg 3 "the connection is closed"): nothing was
  sent.
* pymysql: error 2006 "MySQL server has gone away", which pymysql raises
  only when sending the command failed: the server never had the whole
  command (unless the connection allows ``LOAD DATA LOCAL``, whose file is
  sent after the command: then never); and ``InterfaceError(0, '')``, raised
  before sending on a closed connection.

Not proof, raised as before: an EOF or a reset while waiting for the reply
(the server may have run and committed the statement, then died before
answering; a proxy cutting the connection looks the same), so pymysql's 2013
and libpq's bare "server closed the connection unexpectedly"; libpq also
reports a failed send that way, so for psycopg it is not proof either;
57P02 (crash shutdown: sent from a signal handler, possibly after the
commit); a statement timeout; any SQL error. MariaDB's ``KILL`` closes the
socket before it returns, so the probe at checkout already catches it.

Known limit: a connection that ``LISTEN``\\s handles notifications just
before reporting a statement complete; a kill landing there, after the
commit, is reported as the same FATAL. Pooled connections rarely listen.
"""
import logging
import re
import sys
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

import peewee
from playhouse.shortcuts import ReconnectMixin

from ._redact import redact

logger = logging.getLogger('playhouse_pool.recovery')

# peewee's per-thread state (``db._state``) holds, as ``pool_proven``, the
# connection of the current checkout once it has proven itself (it was new,
# or its first statement ran); anything else there (UNPROVEN, an older
# connection, nothing yet in this thread) means the next statement is the
# checkout's first. The pool's checkout sets it (PooledDatabase.connect); the
# cost per statement is one identity test. Where ReconnectMixin is outside
# the pool, ``pool_retried`` holds the error of a statement the pool ran
# again, until ReconnectMixin has seen it.
UNPROVEN = object()

if TYPE_CHECKING:
    _DatabaseBase = peewee.Database
else:
    _DatabaseBase = object

# Postgres statements whose effects all live in one transaction, by their
# first keyword: a FATAL admin shutdown proves that they left nothing.
_ONE_TRANSACTION = re.compile(
    r'\s*(?:SELECT|INSERT|UPDATE|DELETE|MERGE|WITH|VALUES|TABLE|SHOW|SET'
    r'|RESET|BEGIN|START|TRUNCATE|EXPLAIN)\b', re.IGNORECASE)

# SQLSTATEs of the FATAL a backend sends when it ends from an interrupt
# check, and the English text libpq gives psycopg2 for them.
_PG_ENDED = frozenset(('57P01', '57P05'))
_PG_ENDED_TEXT = tuple('FATAL:  terminating connection due to %s\n' % why
                       for why in ('administrator command',
                                   'unexpected postmaster exit',
                                   'idle-session timeout'))

_MYSQL_SERVER_GONE = 2006        # pymysql: CR_SERVER_GONE_ERROR, send failed
_MYSQL_LOCAL_FILES = 0x80        # CLIENT_LOCAL_FILES: LOAD DATA LOCAL


class StatementWatch(_DatabaseBase):
    """The first-statement watch, as peewee ``Database`` method overrides:
    a base of ``PooledDatabase``, which tells it how to take a dead
    connection out of service (``_retire_dead``) and to count a recovery
    (``_count_recovered``).

    With ``playhouse.shortcuts.ReconnectMixin`` placed before the pool class
    (``class DB(ReconnectMixin, PooledPostgresqlDatabase)``, the order
    peewee documents), ReconnectMixin retries from inside its ``except``
    block, so a first statement run while an exception is being handled is
    not run again by the pool; and when the pool has run a statement again
    and that failed too, ReconnectMixin's check ``in_transaction()`` answers
    True for that error, so ReconnectMixin raises it instead of running the
    statement a third time. Placed after (``class DB(PooledDatabase,
    ReconnectMixin, PostgresqlDatabase)``), ReconnectMixin runs inside the
    pool's watch: a statement it retried has a new connection, which the
    pool leaves alone.
    """

    if TYPE_CHECKING:
        _state: Any       # peewee's per-thread state

    # Where a ReconnectMixin comes before this class in the MRO, after it.
    _reconnect_outside = _reconnect_inside = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        mro = cls.__mro__
        if ReconnectMixin in mro:
            outside = mro.index(ReconnectMixin) < mro.index(StatementWatch)
            cls._reconnect_outside, cls._reconnect_inside = outside, \
                not outside

    def _retire_dead(self, conn: Any) -> None:
        """Check ``conn``, this thread's connection, in as dead (it failed
        the checkout's first statement before the server saw it), to be
        replaced."""
        raise NotImplementedError

    def _count_recovered(self) -> None:
        """A statement ran again on another connection."""
        raise NotImplementedError

    def _never_ran(self, conn: Any, error: BaseException,
                   sql: Optional[str]) -> bool:
        """Backend hook: True only if ``error``, the driver's exception from
        a checkout's first statement on ``conn``, proves that the statement
        had no effect on the server (``sql`` is None for peewee's BEGIN).
        When in doubt, False: the error is raised as it is."""
        return False

    # The hot path, for every statement: two reads of peewee's per-thread
    # state (each costs more than a dict lookup) and an identity test. The
    # healthy first statement of a checkout adds a read and a write. No
    # getattr() default, no helper call, no *args forwarding when there is
    # nothing to forward: each costs more than the test itself.

    def execute_sql(self, sql: Any, params: Any = None, *args: Any,
                    **kwargs: Any) -> Any:
        state = self._state
        conn = state.conn
        try:
            first = conn is not state.pool_proven
        except AttributeError:          # this thread has not checked out yet
            first = True
        if first:
            if (conn is None or state.transactions
                    or self._reconnect_outside):
                return _first_statement(self, super().execute_sql, sql,
                                       (sql, params) + args, kwargs)
            state.pool_proven = conn
            try:
                result = super().execute_sql(sql, params, *args, **kwargs)
            except Exception as exc:
                return _after_failure(self, conn, exc, super().execute_sql,
                                     sql, (sql, params) + args, kwargs)
            if self._reconnect_inside:
                _proven_now(state, conn)
            return result
        if args or kwargs:
            return super().execute_sql(sql, params, *args, **kwargs)
        return super().execute_sql(sql, params)

    def begin(self, *args: Any, **kwargs: Any) -> Any:
        # peewee sends BEGIN on a cursor of its own, not through execute_sql.
        state = self._state
        try:
            first = state.conn is not state.pool_proven
        except AttributeError:
            first = True
        if first:
            return _first_statement(self, super().begin, None, args, kwargs)
        return super().begin(*args, **kwargs)

    def connection(self) -> Any:
        """The driver's connection. Whatever runs on it is out of the pool's
        sight, so the checkout's later statements are not watched."""
        conn = super().connection()
        self._state.pool_proven = conn
        return conn

    def in_transaction(self) -> bool:
        if self._reconnect_outside:
            state = self._state
            retried = getattr(state, 'pool_retried', None)
            if retried is not None:
                state.pool_retried = None
                if sys.exc_info()[1] is retried:
                    # ReconnectMixin, about to retry what the pool already
                    # ran again: its rule for transactions makes it raise.
                    return True
        return super().in_transaction()


def _first_statement(db: StatementWatch, run: Callable[..., Any],
                    sql: Optional[str], args: Tuple[Any, ...],
                    kwargs: Dict[str, Any]) -> Any:
    """Run a checkout's first statement; again, once, on another connection
    if it failed on a connection that was dead before it reached the
    server. ``sql`` is None for peewee's BEGIN. (execute_sql() runs the
    common case inline: a connection open, no transaction.)"""
    state = db._state
    if state.conn is None:
        if not db.autoconnect:
            return run(*args, **kwargs)        # peewee's error, as before
        db.connect()                           # as peewee would, but seen
        if state.conn is state.pool_proven:
            return run(*args, **kwargs)        # a new connection
    conn = state.conn
    # From here on the checkout's statements are not its first, whatever
    # this one does (a statement a layer below runs is not watched twice).
    state.pool_proven = conn
    if state.transactions or (db._reconnect_outside
                              and sys.exc_info()[1] is not None):
        return run(*args, **kwargs)
    try:
        result = run(*args, **kwargs)
    except Exception as exc:
        return _after_failure(db, conn, exc, run, sql, args, kwargs)
    if db._reconnect_inside:
        _proven_now(state, conn)
    return result


def _after_failure(db: StatementWatch, conn: Any, exc: Exception,
                  run: Callable[..., Any], sql: Optional[str],
                  args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
    """The first statement on ``conn`` raised ``exc``: raise it, or, if it
    proves the statement never ran, run it again on another connection."""
    state = db._state
    # A layer below (ReconnectMixin) that replaced the connection has
    # retried already.
    if state.conn is not conn or not db._never_ran(
            conn, _driver_error(exc), sql):
        raise exc
    _replace(db, conn, exc)
    try:
        return run(*args, **kwargs)
    except Exception as again:
        if db._reconnect_outside:
            state.pool_retried = again
        raise


def _proven_now(state: Any, conn: Any) -> None:
    # A ReconnectMixin below the pool may have moved the statement to a new
    # connection: that one has proven itself.
    if state.conn is not conn and state.conn is not None:
        state.pool_proven = state.conn


def _replace(db: StatementWatch, conn: Any, exc: BaseException) -> None:
    """Retire this thread's dead connection and check out another in its
    place; peewee's open blocks (``with db:``) go on on the new one. The
    checkout's error, if none can be had, is raised (chained to ``exc``)."""
    state = db._state
    blocks = state.ctx
    state.reset()
    db._retire_dead(conn)
    state.ctx = blocks
    db.connect()
    state.pool_proven = state.conn
    db._count_recovered()
    logger.info('Connection %x was dead before its first statement reached '
                'the server (%s); running the statement on connection %x.',
                id(conn), redact(_describe(exc)), id(state.conn))


def _driver_error(exc: BaseException) -> BaseException:
    # peewee wraps the driver's error (keeping it as ``orig``); peewee 3.17
    # passes psycopg 3's through unwrapped.
    orig = getattr(exc, 'orig', None)
    return orig if isinstance(orig, BaseException) else exc


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return '%s: %s' % (type(exc).__name__, text[0] if text else '')


def _named(error: BaseException, name: str) -> bool:
    """``error`` is of the DB-API class ``name`` (any driver's)."""
    return any(cls.__name__ == name for cls in type(error).__mro__)


def _driver(error: BaseException) -> str:
    return type(error).__module__.partition('.')[0]


def _one_transaction(sql: Optional[str]) -> bool:
    """A single Postgres statement that commits (or not) as a whole."""
    if sql is None:                            # peewee's BEGIN
        return True
    if not isinstance(sql, str):
        return False
    body = sql.rstrip().rstrip(';')
    return ';' not in body and _ONE_TRANSACTION.match(body) is not None


def _severity(error: BaseException) -> Optional[str]:
    diag = getattr(error, 'diag', None)
    return (getattr(diag, 'severity_nonlocalized', None)
            or getattr(diag, 'severity', None))


def psycopg2_never_ran(conn: Any, error: BaseException,
                       sql: Optional[str]) -> bool:
    """The rule for psycopg2 (see the module docstring)."""
    if _driver(error) != 'psycopg2' or not conn.closed:
        return False
    if _named(error, 'InterfaceError'):
        return True                  # "connection already closed": unsent
    if not _named(error, 'OperationalError'):
        return False
    code = getattr(error, 'pgcode', None)
    if code is not None:
        ended = code in _PG_ENDED and _severity(error) == 'FATAL'
    else:
        try:
            text = conn.info.error_message or ''
        except Exception:
            return False
        ended = text.startswith(_PG_ENDED_TEXT)
    return ended and _one_transaction(sql)


def psycopg_never_ran(conn: Any, error: BaseException,
                      sql: Optional[str]) -> bool:
    """The rule for psycopg 3 (see the module docstring)."""
    if _driver(error) != 'psycopg' or not conn.closed:
        return False
    code = getattr(error, 'sqlstate', None)
    if code is None:
        return (_named(error, 'OperationalError')
                and str(error) == 'the connection is closed')
    return (code in _PG_ENDED and _severity(error) == 'FATAL'
            and _one_transaction(sql))


def pymysql_never_ran(conn: Any, error: BaseException,
                      sql: Optional[str]) -> bool:
    """The rule for pymysql (see the module docstring)."""
    if _driver(error) != 'pymysql':
        return False
    args = error.args
    if _named(error, 'InterfaceError'):
        return args == (0, '')                 # closed: nothing sent
    return (_named(error, 'OperationalError') and bool(args)
            and args[0] == _MYSQL_SERVER_GONE
            and not (getattr(conn, 'client_flag', 0) & _MYSQL_LOCAL_FILES))
