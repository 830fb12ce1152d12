"""What each MySQL/MariaDB driver's connection can tell the pool, cheaply.

``PooledMySQLDatabase`` runs on whichever driver peewee picked (pymysql,
else mysqlclient), the ``playhouse.mysql_ext`` classes on mysql-connector
and MariaDB Connector/Python. The pool's hooks (backends.py) are the same
for all of them; what differs is how a connection object answers five
questions, and each driver below overrides only those answers. The driver
is found from the connection's class, once per class.

Per checkout the pool uses ``is_closed`` (local flags) and a zero-timeout
poll of ``fileno``; per check-in ``server_status`` (is a transaction open:
roll back only then) and, with ``reset_session``, ``reset``. Each of its own
connects gets the driver's connect timeouts the user did not set
(``connect_timeouts``, undone once connected where they would outlive it).
"""
import math
import socket
import weakref
from typing import Any, Dict, Optional

from . import _mysqlclient
from ._probe import probe_for

SERVER_STATUS_IN_TRANS = 0x0001
SERVER_STATUS_AUTOCOMMIT = 0x0002
_COM_RESET_CONNECTION = 0x1f


class Reconnected(Exception):
    """A ping reconnected: the session it was to check is gone."""


class Driver:
    """A DB-API connection nothing more is known of: no local flags, no
    socket (idle connections are checked by ``ping_after``), ``SELECT 1`` for
    a ping, a rollback at every check-in and no session reset."""

    # Whether reset() itself sets up again what the driver did at connect
    # (autocommit, sql_mode, init_command).
    restores_session = False

    def is_closed(self, conn: Any) -> bool:
        """True if local state already says the connection is dead (at
        checkout, before the socket probe: as cheap as can be)."""
        return False

    def lost(self, conn: Any) -> bool:
        """At check-in: True if the connection is dead, its last statement
        having found the server gone (no round trip)."""
        return self.is_closed(conn)

    def fileno(self, conn: Any) -> Optional[int]:
        """The connection's socket, for the readability probe."""
        return None

    def ping(self, conn: Any) -> None:
        """A round trip that never reconnects; raises if it fails."""
        conn.cursor().execute('SELECT 1')

    def server_status(self, conn: Any) -> Optional[int]:
        """The status flags of the server's last reply (no I/O), None if
        the driver does not show them."""
        return None

    def reset(self, conn: Any) -> bool:
        """COM_RESET_CONNECTION; False where the driver cannot send it."""
        return False

    def connect_timeouts(self, params: Dict[str, Any],
                         seconds: float) -> Dict[str, Any]:
        """The connect keywords that end a connect (its handshake included)
        within about ``seconds``, for those ``params`` does not set."""
        return {}

    def restore_timeouts(self, conn: Any, added: Dict[str, Any]) -> None:
        """Undo what of ``added`` would outlive the connect."""


def _whole_seconds(seconds: float) -> int:
    # The C libraries and mysql-connector take whole seconds.
    return max(1, math.ceil(seconds))


class PyMySQL(Driver):
    """pymysql: ``open`` turns false when a reply fails; ``server_status``
    is kept from every reply; its socket is ``_sock``."""

    def is_closed(self, conn: Any) -> bool:
        return not conn.open

    def fileno(self, conn: Any) -> Optional[int]:
        sock = conn._sock
        return sock.fileno() if sock is not None else None

    def ping(self, conn: Any) -> None:
        # A silent reconnect would hand out a connection stripped of its
        # session: never.
        conn.ping(reconnect=False)

    def server_status(self, conn: Any) -> Optional[int]:
        return conn.server_status or 0

    def reset(self, conn: Any) -> bool:
        # No public call: pymysql's command channel, one round trip.
        execute = getattr(conn, '_execute_command', None)
        read_ok = getattr(conn, '_read_ok_packet', None)
        if execute is None or read_ok is None:
            return False
        execute(_COM_RESET_CONNECTION, b'')
        read_ok()
        return True

    def connect_timeouts(self, params: Dict[str, Any],
                         seconds: float) -> Dict[str, Any]:
        # connect_timeout covers the TCP connect only: the handshake reads
        # and writes under read_timeout and write_timeout, which then stay
        # for every statement, so restore_timeouts undoes those.
        added: Dict[str, Any] = {}
        if 'connect_timeout' not in params:
            added['connect_timeout'] = seconds
        for name in ('read_timeout', 'write_timeout'):
            if params.get(name) is None:
                added[name] = seconds
        return added

    def restore_timeouts(self, conn: Any, added: Dict[str, Any]) -> None:
        # pymysql sets its socket's timeout from these before each read or
        # write.
        if 'read_timeout' in added:
            conn._read_timeout = None
        if 'write_timeout' in added:
            conn._write_timeout = None


class MySQLdb(Driver):
    """mysqlclient: ``fileno()`` is its socket; the status flags and the
    reset come from its C library (see _mysqlclient)."""

    def is_closed(self, conn: Any) -> bool:
        return not conn.open

    def lost(self, conn: Any) -> bool:
        # ``open`` stays true after the server went away, until close():
        # the library's dropped socket tells that, with no I/O.
        return not conn.open or _mysqlclient.lost(conn)

    def fileno(self, conn: Any) -> Optional[int]:
        return conn.fileno()

    def ping(self, conn: Any) -> None:
        # ping() reconnects if someone turned the (deprecated) reconnect
        # option on: a new thread id means a new session, so not alive.
        thread_id = conn.thread_id()
        conn.ping()
        if conn.thread_id() != thread_id:
            raise Reconnected()

    def server_status(self, conn: Any) -> Optional[int]:
        return _mysqlclient.server_status(conn)

    def reset(self, conn: Any) -> bool:
        return _mysqlclient.reset_connection(conn)

    def connect_timeouts(self, params: Dict[str, Any],
                         seconds: float) -> Dict[str, Any]:
        # The C library's connect timeout covers the TCP connect and the
        # wait for the server's greeting.
        if 'connect_timeout' in params:
            return {}
        return {'connect_timeout': _whole_seconds(seconds)}


class MySQLConnector(Driver):
    """mysql-connector-python, pure Python or its C extension: both keep
    ``in_transaction`` from the last reply, and ``cmd_reset_connection()``
    sets the session up again itself. The pure connection's socket is
    ``_socket.sock``; the C extension shows none (``ping_after`` checks its
    idle connections)."""
    restores_session = True

    def is_closed(self, conn: Any) -> bool:
        is_closed = getattr(conn, 'is_closed', None)    # the C extension
        if is_closed is not None:
            return is_closed()
        return self.fileno(conn) in (None, -1)

    def lost(self, conn: Any) -> bool:
        # The pure connection keeps its socket open and shows nothing after
        # a reply failed: an idle socket with something to read has the
        # server's EOF (results are read in full: peewee buffers them).
        if self.is_closed(conn):
            return True
        probe = probe_for(self.fileno(conn))
        return probe is not None and probe.readable()

    def fileno(self, conn: Any) -> Optional[int]:
        sock = getattr(getattr(conn, '_socket', None), 'sock', None)
        return sock.fileno() if sock is not None else None

    def ping(self, conn: Any) -> None:
        conn.ping(reconnect=False)

    def server_status(self, conn: Any) -> Optional[int]:
        return SERVER_STATUS_IN_TRANS if conn.in_transaction else 0

    def reset(self, conn: Any) -> bool:
        return bool(conn.cmd_reset_connection())

    def connect_timeouts(self, params: Dict[str, Any],
                         seconds: float) -> Dict[str, Any]:
        # connection_timeout (alias connect_timeout) covers the handshake.
        if 'connection_timeout' in params or 'connect_timeout' in params:
            return {}
        return {'connection_timeout': _whole_seconds(seconds)}

    def restore_timeouts(self, conn: Any, added: Dict[str, Any]) -> None:
        # The pure connection's socket: older releases kept the connect
        # timeout on it for every statement (newer ones clear it).
        sock = getattr(conn, '_socket', None)
        if sock is not None and hasattr(sock, 'set_connection_timeout'):
            sock.set_connection_timeout(None)


def connector_connect_error(exc: Exception) -> Exception:
    """mysql-connector's timeouts subclass its ``Error`` directly, not
    ``OperationalError``: a connect that timed out becomes the driver's
    ``OperationalError`` (peewee's, once wrapped), as with every other
    driver, so that the pool retries it within its deadline."""
    if type(exc).__name__ not in ('ConnectionTimeoutError',
                                  'ReadTimeoutError', 'WriteTimeoutError'):
        return exc
    from mysql.connector import errors
    return errors.OperationalError(msg=getattr(exc, 'msg', str(exc)),
                                   errno=getattr(exc, 'errno', None))


class MariaDBConnector(Driver):
    """MariaDB Connector/Python: ``_get_socket()`` is the socket (-1 once
    the library dropped it), ``server_status`` is read from Connector/C.
    Its ``open`` and ``socket`` are not used: the first pings, the second
    wraps the descriptor in a socket object that closes it when freed."""

    def __init__(self) -> None:
        self._shut_down: 'weakref.WeakSet[Any]' = weakref.WeakSet()

    def is_closed(self, conn: Any) -> bool:
        return (conn._closed or conn._get_socket() < 0
                or conn in self._shut_down)

    def shut_down(self, conn: Any) -> None:
        """End the session without freeing the C connection: shutdown(2)
        its socket both ways (it stays open until the driver frees it).
        close() frees it at once, even while a statement runs on it (in a
        thread that close_all() or close_stale() closed it under, or under
        a signal handler of the thread itself), and that statement then
        runs on freed memory and crashes the process; after a shutdown it
        fails with the driver's error. The server sees the session end."""
        self._shut_down.add(conn)
        fd = conn._get_socket()
        if fd < 0:
            return
        sock = socket.socket(fileno=fd)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            sock.detach()

    def fileno(self, conn: Any) -> Optional[int]:
        return conn._get_socket()

    def ping(self, conn: Any) -> None:
        # With auto_reconnect on, ping() reconnects: a new session.
        connection_id = conn.connection_id
        conn.ping()
        if conn.connection_id != connection_id:
            raise Reconnected()

    def server_status(self, conn: Any) -> Optional[int]:
        return conn.server_status

    def reset(self, conn: Any) -> bool:
        conn.reset()
        return True

    def connect_timeouts(self, params: Dict[str, Any],
                         seconds: float) -> Dict[str, Any]:
        # Connector/C's connect timeout covers the TCP connect and the wait
        # for the server's greeting.
        if 'connect_timeout' in params:
            return {}
        return {'connect_timeout': _whole_seconds(seconds)}


_GENERIC = Driver()
# By the top-level package of the connection's class (or a base class).
MARIADB = MariaDBConnector()
MYSQL_CONNECTOR = MySQLConnector()
_BY_PACKAGE: Dict[str, Driver] = {
    'pymysql': PyMySQL(), 'MySQLdb': MySQLdb(), 'mysql': MYSQL_CONNECTOR,
    'mariadb': MARIADB}
_BY_CLASS: Dict[type, Driver] = {}


def driver_named(module: str) -> Driver:
    """The driver hooks for the driver module named ``module`` (the generic
    ones if unknown)."""
    return _BY_PACKAGE.get(module.partition('.')[0], _GENERIC)


def driver_of(conn: Any) -> Driver:
    """The driver hooks for ``conn`` (the generic ones if unknown)."""
    try:
        return _BY_CLASS[type(conn)]
    except KeyError:
        pass
    driver = _GENERIC
    for klass in type(conn).__mro__:
        package = klass.__module__.partition('.')[0]
        if package in _BY_PACKAGE:
            driver = _BY_PACKAGE[package]
            break
    _BY_CLASS[type(conn)] = driver
    return driver
