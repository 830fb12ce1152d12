"""The asyncio face: peewee 4's ``playhouse.pwasyncio`` databases over this
package's pool (docs/design.rst, "The asyncio face")::

    from playhouse_pool.asyncio import AsyncPostgresqlDatabase

    db = AsyncPostgresqlDatabase('app', user='app', max_connections=16,
                                 stale_timeout=300, timeout=10)

Needs peewee >= 4.3 (the pwasyncio hooks it overrides appeared there) and
greenlet (which pwasyncio imports); the extras ``asyncio-postgres``,
``asyncio-mysql`` and ``asyncio-sqlite`` install them with the driver.
"""
import re
from typing import Tuple

import peewee

_INSTALL = ("pip install 'playhouse-pool[asyncio-postgres]' (or "
            "asyncio-mysql, asyncio-sqlite)")


def _version(text: str) -> Tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r'\d+', text)[:2])


if _version(peewee.__version__) < (4, 3):  # type: ignore[attr-defined]
    raise ImportError(
        'playhouse_pool.asyncio needs peewee >= 4.3 (playhouse.pwasyncio '
        'and the hooks the pool overrides appeared there); this is peewee '
        '%s: %s' % (peewee.__version__,  # type: ignore[attr-defined]
                    _INSTALL))
try:
    import greenlet  # noqa: F401
except ImportError as exc:
    raise ImportError('playhouse_pool.asyncio needs greenlet '
                      '(playhouse.pwasyncio runs on it): %s' % _INSTALL
                      ) from exc

from .backends import (AsyncMySQLDatabase,  # noqa: E402
                       AsyncPostgresqlDatabase, AsyncSqliteDatabase)
from .pool import AsyncPooledDatabase  # noqa: E402
from .waiting import PoolTimeout  # noqa: E402

__all__ = ['AsyncMySQLDatabase', 'AsyncPooledDatabase',
           'AsyncPostgresqlDatabase', 'AsyncSqliteDatabase', 'PoolTimeout']
