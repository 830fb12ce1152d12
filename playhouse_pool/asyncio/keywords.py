"""The asyncio face's keywords: the pool's own, and pwasyncio's
(``pool_size``, ``pool_min_size``, ``acquire_timeout``) as the same
settings, with pwasyncio's defaults where neither is given, so that a
one-import switch from ``playhouse.pwasyncio`` behaves as before.
"""
from typing import Any, Dict, Optional

from .._options import PoolOptions, pop_options

# pwasyncio's keyword -> the pool's.
ALIASES = {'pool_size': 'max_connections',
           'pool_min_size': 'min_connections',
           'acquire_timeout': 'timeout'}

# pwasyncio's defaults (10 connections, at least 1 kept open, a 10 s
# wait), where the thread pool's are 20, 0 and no wait at all.
DEFAULTS = PoolOptions(max_connections=10, min_connections=1, timeout=10.0)


def pop_async_options(kwargs: Dict[str, Any],
                      previous: Optional[PoolOptions] = None
                      ) -> PoolOptions:
    """Take the pool's keywords and pwasyncio's out of ``kwargs`` (the rest
    go to peewee and the driver), validated onto ``previous`` (None: the
    defaults). ValueError names both when a setting is given twice with
    different values (``pool_size=5, max_connections=8``)."""
    given = {}
    for alias, name in ALIASES.items():
        if alias not in kwargs:
            continue
        value = kwargs.pop(alias)
        if name in kwargs and kwargs[name] != value:
            raise ValueError(
                '%s=%r and %s=%r are the same setting with different '
                'values: give one of them' % (alias, value, name,
                                              kwargs[name]))
        kwargs[name] = value
        given[name] = alias
    base = DEFAULTS if previous is None else previous
    try:
        return base.updated(pop_options(kwargs))
    except (TypeError, ValueError) as exc:
        # The error names the setting as the caller did: "pool_size
        # (max_connections) must be >= 0".
        message = str(exc)
        for name, alias in given.items():
            if message.startswith(name):
                message = '%s (%s)%s' % (alias, name, message[len(name):])
        raise type(exc)(message) from None
