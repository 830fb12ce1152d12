"""What mysqlclient (``MySQLdb``) keeps in its C client library but does not
expose: the server status flags and ``COM_RESET_CONNECTION``.

pymysql, mysql-connector and MariaDB Connector/Python each show the status
flags the server sends with every reply (``SERVER_STATUS_IN_TRANS`` says a
transaction is open), so check-in rolls back only when one is. mysqlclient
has no such attribute, and no call for a session reset. Without them every
check-in would pay a ``ROLLBACK`` round trip, and ``reset_session`` could
not reuse connections at all.

Both exist in the C library mysqlclient is built on, as public API:
``mariadb_get_info(MARIADB_CONNECTION_SERVER_STATUS)`` in MariaDB
Connector/C (the library Debian, Ubuntu and Fedora build mysqlclient
against), ``mysql_reset_connection()`` in it and in Oracle's libmysqlclient
(5.7.3+). mysqlclient hands out its ``MYSQL *`` handle for such use through
``_get_native_connection()`` (a capsule, mysqlclient 2.1+). The functions
are looked up in the loaded ``MySQLdb._mysql`` module, whose dynamic linker
scope holds the library it was linked with. Where one is missing (Oracle's
library has no ``mariadb_get_infov``; a static build exports nothing),
``server_status`` returns None and ``reset_connection`` False: the caller
falls back to a rollback at each check-in, and to not reusing.
"""
import ctypes
import logging
import weakref
from typing import Any, Optional

logger = logging.getLogger('playhouse_pool')

_CAPSULE_NAME = b'_mysql.connection.native_connection'
# enum mariadb_value in MariaDB Connector/C's mysql.h (stable since 3.0).
_MARIADB_CONNECTION_SERVER_STATUS = 30
_MARIADB_CONNECTION_SOCKET = 19


def _load() -> Any:
    try:
        from MySQLdb import _mysql
        # PyDLL keeps the GIL: reading a field must not hand it off (see
        # _probe); CDLL releases it around the reset, a round trip.
        local, blocking = ctypes.PyDLL(_mysql.__file__), ctypes.CDLL(
            _mysql.__file__)
    except (ImportError, OSError, AttributeError):
        return None, None, None
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    # No argtypes: the call passes a ready c_void_p, a small int and a ready
    # byref, which ctypes converts fastest untyped (as in _probe).
    info = getattr(local, 'mariadb_get_info', None)
    if info is not None:
        info.restype = ctypes.c_ubyte
    reset = getattr(blocking, 'mysql_reset_connection', None)
    if reset is not None:
        reset.restype = ctypes.c_int
        reset.argtypes = [ctypes.c_void_p]
    return get_pointer, info, reset


_get_pointer, _info, _reset = _load()


class _Handle:
    """One connection's ``MYSQL *`` and a reusable out-argument for it."""
    __slots__ = ('pointer', 'value', 'ref', '__weakref__')

    def __init__(self, conn: Any) -> None:
        self.pointer = ctypes.c_void_p(
            _get_pointer(conn._get_native_connection(), _CAPSULE_NAME))
        self.value = ctypes.c_int(0)
        self.ref = ctypes.byref(self.value)

    def read(self, what: int) -> Optional[int]:
        if _info(self.pointer, what, self.ref):     # non-zero: an error
            return None
        return self.value.value


# The handle is read once per connection: the capsule call costs more than
# the read itself. Weak keys: a closed connection's entry goes with it.
_handles: 'weakref.WeakKeyDictionary[Any, _Handle]' = (
    weakref.WeakKeyDictionary())


def _handle(conn: Any) -> _Handle:
    handle = _handles.get(conn)
    if handle is None:
        handle = _handles[conn] = _Handle(conn)
    return handle


def server_status(conn: Any) -> Optional[int]:
    """The status flags of the server's last reply (no I/O), or None if
    the client library cannot tell them."""
    if _info is None:
        return None
    return _handle(conn).read(_MARIADB_CONNECTION_SERVER_STATUS)


def lost(conn: Any) -> bool:
    """True if the client library has dropped the connection's socket (it
    does when a reply fails: the server is gone). No I/O; False if unknown.
    mysqlclient's own ``open`` stays true until ``close()``."""
    if _info is None:
        return False
    return _handle(conn).read(_MARIADB_CONNECTION_SOCKET) in (None, -1)


def reset_connection(conn: Any) -> bool:
    """Send COM_RESET_CONNECTION; False if the library has no such call.
    Raises the driver's OperationalError if the server refused it."""
    if _reset is None or _get_pointer is None:
        return False
    if _reset(_handle(conn).pointer) != 0:
        raise conn.OperationalError(conn.errno(), conn.error())
    return True
