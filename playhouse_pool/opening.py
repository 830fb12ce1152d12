"""Opening, checking and closing one connection, as a pool worker does it,
through the database's hooks: the jobs' side of the pool
(:class:`jobs.ConnectionIO`). Opening calls the connect keywords' callables
(never storing what they return), adds the driver's own connect timeouts
where the user set none, runs the database's own connect, reads the server
version, runs the user's ``configure`` and makes the readability probe. All
of it, and each ping, reset and close, within the pool's deadline for its
own I/O (rule 9: watchdog.py). The messages it makes name the database,
never with a secret.
"""
import inspect
import logging
import threading
import time
from typing import Any, Dict, Optional, Protocol

import peewee
from peewee import OperationalError

from ._options import IO_GRACE, PoolOptions
from ._probe import Probe, probe_for
from ._redact import redact
from .errors import ConfigureError, could_not_connect, describe
from .records import PoolConnection
from .watchdog import Socket, Watch, Watchdog, socket_of

logger = logging.getLogger('playhouse_pool')

# peewee's context manager that turns driver errors into peewee's.
driver_errors = peewee.__exception_wrapper__  # type: ignore[attr-defined]


class Hooks(Protocol):
    """The pooled database, as opening sees it: peewee's hooks and the
    backend's (backends.py)."""
    database: Any
    server_version: Any
    _pool_options: PoolOptions
    _connect_params: Dict[str, Any]

    def _connect(self) -> Any: ...
    def _close(self, conn: Any) -> None: ...
    def _set_server_version(self, conn: Any) -> None: ...
    def _fileno(self, conn: Any) -> Optional[int]: ...
    def _ping(self, conn: Any) -> bool: ...
    def _can_reuse(self, conn: Any) -> bool: ...
    def conn_key(self, conn: Any) -> Any: ...

    def _connect_timeouts(self, params: Dict[str, Any],
                          seconds: float) -> Dict[str, Any]: ...

    def _restore_timeouts(self, conn: Any, added: Dict[str, Any]) -> None: ...


class Named(Protocol):
    """A pooled database, as the messages about it see it."""
    database: Any
    _pool_options: PoolOptions


class DatabaseNames:
    """Names for what the pool logs and raises about ``db``'s connections,
    never with a secret (the jobs' ``Naming``): a base of both faces'
    openers."""
    db: Named

    def name(self) -> str:
        return redact(str(self.db.database))

    def describe(self, error: BaseException) -> str:
        return describe(error)

    def could_not_connect(self, cause: BaseException) -> BaseException:
        return could_not_connect(self.name(), self.db._pool_options.timeout,
                                 cause)


class Opener(DatabaseNames):
    """One database's connections, opened, checked and closed."""
    db: Hooks

    def __init__(self, db: Hooks, watchdog: Watchdog) -> None:
        self.db = db
        self.watchdog = watchdog
        # While a worker opens a connection: the connect keywords with their
        # callables called, for connect_params on that thread only.
        self._resolved = threading.local()
        # The top-level package of the driver's connections (psycopg,
        # pymysql, ...), known from the first one opened (shutdown.py).
        self.driver_package: Optional[str] = None

    def connect_params(self) -> Dict[str, Any]:
        """peewee's connect keywords; while a worker opens a connection on
        this thread, with every zero-argument callable called."""
        resolved = getattr(self._resolved, 'params', None)
        return self.db._connect_params if resolved is None else resolved

    # -- ConnectionIO --------------------------------------------------------

    def open(self) -> PoolConnection:
        """Open, set up and wrap a connection, within the pool's deadline
        for it. Raises the driver's error (as peewee's) or ConfigureError."""
        db = self.db
        # Secrets stay in this frame and the driver: never stored.
        resolved = dict(resolve_providers(db._connect_params))
        seconds = db._pool_options.io_seconds
        added = db._connect_timeouts(resolved, seconds)
        resolved.update(added)
        # The driver's own limit ends a silent connect; the watch is the
        # backstop, and cuts short what runs on the new connection next.
        with self.watchdog.watch(None, seconds + IO_GRACE) as watch:
            self._resolved.params = resolved
            try:
                with driver_errors:
                    conn = db._connect()
            finally:
                self._resolved.params = None
            watch.attach(self.socket(conn))
            record = self._set_up(conn, added)
        if watch.cut:
            self.close_conn(conn)
            raise OperationalError(
                'playhouse_pool: a new connection to %s did not finish '
                'setting up within %.3gs' % (self.name(), seconds))
        return record

    def _set_up(self, conn: Any, added: Dict[str, Any]) -> PoolConnection:
        """What follows a connect: the pool's connect-only limits undone,
        the server version, ``configure``, the probe. Closes ``conn`` if any
        of it fails."""
        db = self.db
        try:
            db._restore_timeouts(conn, added)
            if db.server_version is None:
                with driver_errors:
                    db._set_server_version(conn)
            configure = db._pool_options.configure
            if configure is not None:
                try:
                    configure(conn)
                except Exception as exc:
                    raise ConfigureError(
                        'configure() failed on a new connection: %s'
                        % self.describe(exc)) from exc
            probe = self._probe(conn)
        except BaseException:
            self.close_conn(conn)
            raise
        self.driver_package = type(conn).__module__.partition('.')[0]
        return PoolConnection(conn, db.conn_key(conn), probe,
                              db._pool_options.stale_timeout,
                              time.monotonic())

    def close(self, record: PoolConnection) -> None:
        # A close sends a goodbye, which a full send buffer to a silent
        # host could block.
        with self.bounded(record.conn):
            self.close_conn(record.conn)

    def ping(self, record: PoolConnection) -> bool:
        with self.bounded(record.conn) as watch:
            try:
                alive = bool(self.db._ping(record.conn))
            except Exception:
                alive = False
        if watch.cut:
            logger.warning('Connection %s did not answer its ping within '
                           '%.3gs; replacing it.', record.key, watch.seconds)
            return False
        return alive

    def reset(self, record: PoolConnection) -> bool:
        return self.reset_conn(record.conn)

    # -- On a driver connection ----------------------------------------------

    def close_conn(self, conn: Any) -> None:
        """Close ``conn`` with the database's hook; never raises."""
        try:
            self.db._close(conn)
        except Exception:
            logger.debug('Error closing connection %x.', id(conn),
                         exc_info=True)

    def reset_conn(self, conn: Any) -> bool:
        """The check-in clean-up (``_can_reuse``); never raises."""
        try:
            return self.db._can_reuse(conn)
        except Exception:
            logger.debug('Connection %x failed its reset.', id(conn),
                         exc_info=True)
            return False

    def bounded(self, conn: Any) -> Watch:
        """A watch over the pool's own I/O on ``conn`` (rule 9), to be
        entered on the thread that does it: past ``io_seconds`` its socket
        is shut down, so the driver call fails. ``with
        opener.bounded(conn) as watch: ...``, then ``watch.cut``."""
        return self.watchdog.watch(self.socket(conn),
                                   self.db._pool_options.io_seconds)

    def socket(self, conn: Any) -> Optional[Socket]:
        """``conn``'s socket, for the watchdog to shut down; None if it
        shows none."""
        try:
            return socket_of(self.db._fileno(conn))
        except Exception:
            return None

    def _probe(self, conn: Any) -> Optional[Probe]:
        try:
            return probe_for(self.db._fileno(conn))
        except Exception:                  # no socket to probe
            logger.debug('No readability probe for connection %x.', id(conn),
                         exc_info=True)
            return None


def resolve_providers(params: Dict[str, Any]) -> Dict[str, Any]:
    """``params`` with every zero-argument callable called (a rotating
    password, say): for one connect, never stored."""
    providers = [k for k, v in params.items() if _is_provider(v)]
    if not providers:
        return params
    return {k: (v() if k in providers else v) for k, v in params.items()}


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
