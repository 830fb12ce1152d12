"""Exceptions the pool raises itself (driver errors pass through peewee's)."""
from peewee import OperationalError


class MaxConnectionsExceeded(ValueError):
    """No connection could be had: the pool is at ``max_connections`` and
    none came free in time, or a connect under way for the caller did not
    finish in time (or ``timeout`` is None and none was free at once, or
    ``max_waiting`` threads were already waiting). The message says what the
    caller waited for.

    Subclasses ``ValueError`` as peewee's own ``MaxConnectionsExceeded`` does,
    so code written for ``playhouse.pool`` keeps catching it.
    """


class PoolClosedError(MaxConnectionsExceeded):
    """The pool is shutting down (``close_all()`` is draining it or failed the
    waiters). Retry after ``close_all()`` returns: the pool is usable again.
    """


class ConfigureError(OperationalError):
    """The ``configure`` callable failed on a new connection: that
    connection was closed (and, within ``timeout``, another one tried). The
    callable's own error is chained (``__cause__``)."""
