"""A real PgBouncer in transaction pooling mode, for tests.

The ``pgbouncer`` fixture (import ``pgbouncer_fixture`` into the test
module) creates a database of its own on the test Postgres
(``POSTGRES_URL``), so that every server connection to it is PgBouncer's,
starts ``pgbouncer`` on a free loopback port in front of it, with its
config, auth file, log and pid file in a temporary directory, waits until
it accepts connections and yields a ``Bouncer`` (``host``, ``port``,
``pool_size``, ``dbname``, ``user``, and helpers that count connections).
At teardown it stops PgBouncer and drops the database.

A missing ``pgbouncer`` binary skips the tests, unless
``PLAYHOUSE_POOL_REQUIRE`` names ``pgbouncer``: then they fail. An
unreachable Postgres is handled as in conftest (``postgres``).
"""
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from typing import Any, Dict, Iterator, List, Optional

import pytest

from conftest import (POSTGRES_URL, REQUIRED, Psycopg2Backend, _require,
                      _url_kwargs)

POOL_SIZE = 4               # default_pool_size: server connections at most
MAX_CLIENT_CONN = 500
START_TIMEOUT = 15.0        # seconds for PgBouncer to accept connections
_CANDIDATES = ('/usr/sbin/pgbouncer', '/usr/bin/pgbouncer',
               '/usr/local/bin/pgbouncer')

_INI = """\
[databases]
{dbname} = {target}

[pgbouncer]
listen_addr = {host}
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {dir}/userlist.txt
admin_users = {user}
stats_users = {user}
pool_mode = transaction
default_pool_size = {pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_db_connections = {pool_size}
max_client_conn = {max_client_conn}
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = {dir}/pgbouncer.log
pidfile = {dir}/pgbouncer.pid
"""


def pgbouncer_binary() -> Optional[str]:
    found = shutil.which('pgbouncer')
    if found:
        return found
    for path in _CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return None


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _connect(**kwargs: Any) -> Any:
    import psycopg2
    conn = psycopg2.connect(**kwargs)
    conn.autocommit = True
    return conn


def _query(conn: Any, sql: str, params: tuple = ()) -> List[tuple]:
    with conn.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall()) if cursor.description else []


class Bouncer:
    """A running PgBouncer: clients connect to ``host``:``port``, database
    ``dbname``, user ``user``; it keeps at most ``pool_size`` server
    connections to Postgres."""

    def __init__(self, host: str, port: int, pool_size: int, dbname: str,
                 user: str, directory: str, proc: Any) -> None:
        self.host = host
        self.port = port
        self.pool_size = pool_size
        self.dbname = dbname
        self.user = user
        self.dir = directory
        self.proc = proc

    def connect(self) -> Any:
        """A plain psycopg2 client connection through PgBouncer."""
        return _connect(host=self.host, port=self.port, dbname=self.dbname,
                        user=self.user, connect_timeout=5)

    def connect_console(self) -> Any:
        """PgBouncer's admin console (``SHOW POOLS`` and the like)."""
        return _connect(host=self.host, port=self.port, dbname='pgbouncer',
                        user=self.user, connect_timeout=5)

    def connect_postgres(self, dbname: Optional[str] = None) -> Any:
        """A direct connection to Postgres (not through PgBouncer), by
        default to the test server's own database, which
        ``server_connections`` does not count; ``dbname=bouncer.dbname``
        for ours (then it is counted)."""
        params = _url_kwargs(POSTGRES_URL)
        database = params.pop('database')
        return _connect(dbname=dbname or database, **params)

    def server_connections(self, pg_conn: Any) -> int:
        """Server connections to our database, as Postgres sees them (all
        of them PgBouncer's): client backends with ``datname`` ours."""
        return _query(pg_conn,
                      "SELECT count(*) FROM pg_stat_activity "
                      "WHERE datname = %s AND backend_type = 'client backend'",
                      (self.dbname,))[0][0]

    def pool(self, console: Any) -> Dict[str, Any]:
        """Our database's row of ``SHOW POOLS``, as a dict."""
        with console.cursor() as cursor:
            cursor.execute('SHOW POOLS')
            names = [d[0] for d in cursor.description]
            for row in cursor.fetchall():
                entry = dict(zip(names, row))
                if entry['database'] == self.dbname:
                    return entry
        return {}

    def log_tail(self, lines: int = 30) -> str:
        text = ''
        for name in ('pgbouncer.log', 'stderr.log'):
            try:
                with open(os.path.join(self.dir, name)) as f:
                    text += ''.join(f.readlines()[-lines:])
            except OSError:
                pass
        return text


def _start(binary: str, dbname: str) -> Bouncer:
    """Start PgBouncer on a free port (a couple of tries: the port is only
    reserved until we let go of it) and wait until it accepts clients."""
    pg = _url_kwargs(POSTGRES_URL)
    host = '127.0.0.1'
    user = pg.get('user', 'postgres')
    directory = tempfile.mkdtemp(prefix='pp_pgbouncer_')
    # PgBouncer refuses to run as root; as root, it switches to the
    # (unprivileged) postgres user, which must own its directory.
    run_as = None
    if os.geteuid() == 0:
        try:
            run_as = pwd.getpwnam('postgres')
        except KeyError:
            run_as = pwd.getpwnam('nobody')
        os.chown(directory, run_as.pw_uid, run_as.pw_gid)
    with open(os.path.join(directory, 'userlist.txt'), 'w') as f:
        f.write('"%s" ""\n' % user)
    target = 'host=%s port=%s dbname=%s user=%s' % (
        pg['host'], pg.get('port', 5432), dbname, user)
    if pg.get('password'):
        target += ' password=%s' % pg['password']
    last = ''
    for _attempt in range(3):
        port = _free_port(host)
        for name in ('pgbouncer.log', 'stderr.log'):
            if os.path.exists(os.path.join(directory, name)):
                os.unlink(os.path.join(directory, name))
        ini = os.path.join(directory, 'pgbouncer.ini')
        with open(ini, 'w') as f:
            f.write(_INI.format(
                dbname=dbname, target=target,
                host=host, port=port, user=user, dir=directory,
                pool_size=POOL_SIZE, max_client_conn=MAX_CLIENT_CONN))
        if run_as is not None:
            for name in os.listdir(directory):
                os.chown(os.path.join(directory, name), run_as.pw_uid,
                         run_as.pw_gid)
        command = [binary]
        if run_as is not None:
            command += ['-u', run_as.pw_name]
        command.append(ini)
        with open(os.path.join(directory, 'stderr.log'), 'w') as err:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err)
        bouncer = Bouncer(host, port, POOL_SIZE, dbname, user, directory,
                          proc)
        deadline = time.monotonic() + START_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                bouncer.connect_console().close()
                return bouncer
            except Exception as exc:
                last = str(exc).strip()
                time.sleep(0.02)
        exited = proc.poll()
        log = bouncer.log_tail()
        _stop(proc)
        if 'Address already in use' not in log:
            break           # not a port race: do not try again
    how = ('exited with code %s' % exited if exited is not None else
           'did not accept connections within %.0f s' % START_TIMEOUT)
    pytest.fail('pgbouncer (%s) %s; last connect error: %s\n'
                '--- its log (kept in %s) ---\n%s'
                % (binary, how, last, directory, log))


def _stop(proc: Any) -> None:
    if proc.poll() is None:
        proc.terminate()            # SIGTERM: immediate shutdown
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _drop_database(admin: Any, dbname: str) -> None:
    try:
        _query(admin, 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % dbname)
    except Exception:       # Postgres < 13: no FORCE
        _query(admin, 'SELECT pg_terminate_backend(pid) FROM pg_stat_activity'
                      ' WHERE datname = %s', (dbname,))
        _query(admin, 'DROP DATABASE IF EXISTS "%s"' % dbname)


@pytest.fixture(scope='module', name='pgbouncer')
def pgbouncer_fixture() -> Iterator[Bouncer]:
    """The ``pgbouncer`` fixture: PgBouncer (transaction pooling,
    ``POOL_SIZE`` server connections) in front of a database of its own on
    the test Postgres."""
    binary = pgbouncer_binary()
    if binary is None:
        reason = ('pgbouncer not installed (apt-get install pgbouncer); '
                  'not found on PATH nor in %s' % ', '.join(_CANDIDATES))
        if 'pgbouncer' in REQUIRED:
            pytest.fail('%s (PLAYHOUSE_POOL_REQUIRE names it)' % reason)
        pytest.skip(reason)
    _require(Psycopg2Backend)
    params = _url_kwargs(POSTGRES_URL)
    admin = _connect(dbname=params.pop('database'), **params)
    dbname = 'pp_bouncer_%s' % uuid.uuid4().hex[:10]
    _query(admin, 'CREATE DATABASE "%s"' % dbname)
    try:
        bouncer = _start(binary, dbname)
        try:
            yield bouncer
        finally:
            _stop(bouncer.proc)
            shutil.rmtree(bouncer.dir, ignore_errors=True)
    finally:
        _drop_database(admin, dbname)
        admin.close()
