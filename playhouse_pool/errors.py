"""Exceptions the pool raises itself (driver errors pass through peewee's)."""


class MaxConnectionsExceeded(ValueError):
    """No connection could be had: the pool is at ``max_connections`` and
    none came free in time (or ``timeout`` is None and none was free at once,
    or ``max_waiting`` threads were already waiting).

    Subclasses ``ValueError`` as peewee's own ``MaxConnectionsExceeded`` does,
    so code written for ``playhouse.pool`` keeps catching it.
    """


class PoolClosedError(MaxConnectionsExceeded):
    """The pool is shutting down (``close_all()`` is draining it or failed the
    waiters). Retry after ``close_all()`` returns: the pool is usable again.
    """
