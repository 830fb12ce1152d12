"""Opening a connection, as a pool worker does it: the connect keywords'
callables called (and never stored), the driver's own connect timeouts where
the user set none, the database's own connect, the server version, the
user's ``configure``, the readability probe; and the messages that name the
database, never with a secret.

``ConnectionOpening`` is a mixin of ``PooledDatabase`` (pool.py), which
calls ``_new_connection`` from its workers (workers.py) and closes with
``_close_raw``.
"""
import inspect
import logging
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Dict, Optional

import peewee
from peewee import OperationalError

from ._options import IO_GRACE, PoolOptions
from ._probe import probe_for
from ._redact import redact
from .errors import ConfigureError
from .records import PoolConnection

if TYPE_CHECKING:
    from .workers import Socket, Watchdog

logger = logging.getLogger('playhouse_pool')

# peewee's context manager that turns driver errors into peewee's.
_driver_errors = peewee.__exception_wrapper__  # type: ignore[attr-defined]


class ConnectionOpening:
    """How a pooled database opens (and closes) one connection."""

    if TYPE_CHECKING:
        # The pooled database's and peewee's, which this builds on.
        _pool_options: PoolOptions
        _watchdog: 'Watchdog'
        _connect_params: Dict[str, Any]
        database: Any
        server_version: Any

        def _connect(self) -> Any: ...
        def _close(self, conn: Any) -> None: ...
        def _set_server_version(self, conn: Any) -> None: ...
        def _fileno(self, conn: Any) -> Optional[int]: ...
        def _socket(self, conn: Any) -> Optional['Socket']: ...
        def conn_key(self, conn: Any) -> Any: ...

    def _init_opening(self) -> None:
        # While a worker opens a connection: the connect keywords with their
        # callables called, for connect_params on that thread only.
        self._resolved = threading.local()
        # The top-level package of the driver's connections (psycopg,
        # pymysql, ...), known from the first one opened.
        self._driver_package: Optional[str] = None

    # -- Connect keywords as callables --------------------------------------

    @property
    def connect_params(self) -> Dict[str, Any]:
        """peewee's connect keywords; while a worker opens a connection on
        this thread, with every zero-argument callable called."""
        resolved = getattr(self._resolved, 'params', None)
        return self._connect_params if resolved is None else resolved

    @connect_params.setter
    def connect_params(self, params: Dict[str, Any]) -> None:
        self._connect_params = params

    # -- The driver's own limits (backends override) --------------------------

    def _connect_timeouts(self, params: Dict[str, Any],
                          seconds: float) -> Dict[str, Any]:
        """The driver's connect keywords that end a connect attempt (the
        handshake included) within about ``seconds``, for those of them
        ``params`` (the user's keywords) does not set: the pool adds them to
        its own connects (DESIGN.md rule 9). None by default."""
        return {}

    def _restore_timeouts(self, conn: Any, added: Dict[str, Any]) -> None:
        """Undo, on the new connection, what of ``added`` would outlive the
        connect (a read timeout), so the user's statements run with their
        own settings."""

    # -- Opening (on workers, outside every lock) ---------------------------

    def _new_connection(self) -> PoolConnection:
        """Open, set up and wrap a connection (a worker calls this), within
        the pool's deadline for it. Raises the driver's error (as peewee's)
        or ConfigureError."""
        params = self._connect_params
        # Secrets stay in this frame and the driver: never stored.
        resolved = {k: (v() if _is_provider(v) else v)
                    for k, v in params.items()}
        seconds = self._pool_options.io_seconds
        added = self._connect_timeouts(resolved, seconds)
        resolved.update(added)
        # The driver's own limit ends a silent connect; the watch is the
        # backstop, and cuts short what runs on the new connection next.
        with self._watchdog.watch(None, seconds + IO_GRACE) as watch:
            self._resolved.params = resolved
            try:
                with _driver_errors:
                    conn = self._connect()
            finally:
                self._resolved.params = None
            watch.attach(self._socket(conn))
            record = self._set_up(conn, added)
        if watch.cut:
            self._close_raw(conn)
            raise OperationalError(
                'playhouse_pool: a new connection to %s did not finish '
                'setting up within %.3gs' % (self._safe_name(), seconds))
        return record

    def _set_up(self, conn: Any, added: Dict[str, Any]) -> PoolConnection:
        """What follows a connect: the pool's connect-only limits undone,
        the server version, ``configure``, the probe. Closes ``conn`` if any
        of it fails."""
        try:
            self._restore_timeouts(conn, added)
            if self.server_version is None:
                with _driver_errors:
                    self._set_server_version(conn)
            configure = self._pool_options.configure
            if configure is not None:
                try:
                    configure(conn)
                except Exception as exc:
                    raise ConfigureError(
                        'configure() failed on a new connection: %s'
                        % self._safe_error(exc)) from exc
            probe = self._probe(conn)
        except BaseException:
            self._close_raw(conn)
            raise
        self._driver_package = type(conn).__module__.partition('.')[0]
        return PoolConnection(conn, self.conn_key(conn), probe,
                              self._pool_options.stale_timeout,
                              time.monotonic())

    def _inside_a_database_call(self) -> bool:
        """Is the caller of the calling method nested inside a database
        call of this thread: a signal handler (or a driver callback) that
        interrupted peewee's, the pool's or the driver's code? Then a
        connection of this thread may be mid-call, and closing it under
        the driver can crash or hang the process: psycopg 3 crashes, and
        psycopg2 deadlocks on its own lock when the handler lands in a
        codec it calls mid-statement. Frames of the wrappers that run the
        user's function (the decorators' ``inner``) do not count. Walks the
        stack: for close_all(), never a hot path."""
        # The codecs: psycopg2 calls one mid-statement, holding its lock.
        packages = ('peewee', 'playhouse', 'playhouse_pool', 'encodings',
                    'codecs', self._driver_package)
        frame: Any = sys._getframe(2)
        while frame is not None:
            name = frame.f_globals.get('__name__') or ''
            if (name.partition('.')[0] in packages
                    and frame.f_code.co_name != 'inner'
                    and not name.startswith('playhouse_pool.benchmark')):
                return True
            frame = frame.f_back
        return False

    def _probe(self, conn: Any) -> Any:
        try:
            return probe_for(self._fileno(conn))
        except Exception:                  # no socket to probe
            logger.debug('No readability probe for connection %x.', id(conn),
                         exc_info=True)
            return None

    def _close_raw(self, conn: Any) -> None:
        try:
            self._close(conn)
        except Exception:
            logger.debug('Error closing connection %x.', id(conn),
                         exc_info=True)

    # -- Messages (never with a secret) -------------------------------------

    def _safe_name(self) -> str:
        return redact(str(self.database))

    def _safe_error(self, exc: BaseException) -> str:
        return redact('%s: %s' % (type(exc).__name__, str(exc).strip()))

    def _could_not_connect(self, cause: BaseException) -> BaseException:
        error = OperationalError(
            'playhouse_pool could not connect to %s within timeout=%s: %s'
            % (self._safe_name(), self._pool_options.timeout,
               self._safe_error(cause)))
        error.__cause__ = cause
        return error


def _is_provider(value: Any) -> bool:
    """A zero-argument callable standing for a connect keyword's value
    (not a class, nor a driver callback such as psycopg's row_factory,
    which takes arguments)."""
    if not callable(value) or isinstance(value, type):
        return False
    try:
        inspect.signature(value).bind()
    except (TypeError, ValueError):
        return False
    return True
