"""The pool's keywords: defaults, validation and their one normalised form.

Every keyword is checked when it is given (constructor, ``init()``, URL) and
a bad one raises before anything on the database changes.
"""
import math
from dataclasses import dataclass, fields, replace
from typing import Any, Dict, Optional

_UNSET: Any = object()

# How long each piece of the pool's own I/O may take (a connect attempt, a
# ping, a check-in rollback or reset, a close; rule 9): ``timeout``
# where one is given, kept between these. The floor is libpq's: it counts
# connect_timeout in whole seconds and treats less than 2 as 2. The ceiling
# keeps a slot held by silence short, whatever a request may wait.
IO_SECONDS_MIN = 2.0
IO_SECONDS_MAX = 10.0
# The pool's watch of a connect ends this much after the driver's own limit
# (which may be rounded up to whole seconds) would have ended it.
IO_GRACE = 1.0


def _whole(name: str, value: Any, *, allow_none: bool) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError('%s must be a whole number%s, not %s'
                        % (name, ' or None' if allow_none else '',
                           type(value).__name__))
    if value < 0:
        raise ValueError('%s must be >= 0, got %d' % (name, value))
    return value


def seconds(name: str, value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError('%s must be a number of seconds or None, not %s'
                        % (name, type(value).__name__))
    if math.isnan(value) or value < 0:
        raise ValueError('%s must be >= 0 seconds, got %r' % (name, value))
    return float(value)


@dataclass(frozen=True)
class PoolOptions:
    """Validated pool settings; see README.rst for each keyword's meaning."""
    max_connections: Optional[int] = 20
    stale_timeout: Optional[float] = None
    timeout: Optional[float] = None
    min_connections: int = 0
    idle_timeout: Optional[float] = None
    ping_after: Optional[float] = 30.0
    max_waiting: Optional[int] = None
    leak_timeout: Optional[float] = None
    reset_session: bool = False
    configure: Any = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        maxc = _whole('max_connections', self.max_connections, allow_none=True)
        set_(self, 'max_connections', maxc or None)   # 0 and None: unlimited
        minc = _whole('min_connections', self.min_connections,
                      allow_none=False) or 0
        if maxc and minc > maxc:
            raise ValueError('min_connections (%d) must not exceed '
                             'max_connections (%d)' % (minc, maxc))
        set_(self, 'max_waiting',
             _whole('max_waiting', self.max_waiting, allow_none=True))
        # peewee's meaning: a stale_timeout of 0 turns the check off.
        set_(self, 'stale_timeout',
             seconds('stale_timeout', self.stale_timeout) or None)
        for name in ('timeout', 'idle_timeout', 'ping_after', 'leak_timeout'):
            set_(self, name, seconds(name, getattr(self, name)))
        for name in ('idle_timeout', 'leak_timeout'):
            if getattr(self, name) == 0:
                raise ValueError('%s must be > 0 seconds or None' % name)
        if self.configure is not None and not callable(self.configure):
            raise TypeError('configure must be a callable taking the new '
                            'connection, or None, not %s'
                            % type(self.configure).__name__)
        if not isinstance(self.reset_session, bool):
            raise TypeError('reset_session must be True or False, not %s'
                            % type(self.reset_session).__name__)

    @property
    def wait_seconds(self) -> Optional[float]:
        """How long a checkout may wait: None = not at all, inf = forever."""
        if self.timeout is None:
            return None
        return self.timeout or math.inf    # peewee's meaning: 0 waits forever

    @property
    def io_seconds(self) -> float:
        """How long each piece of the pool's own I/O may take, in seconds:
        ``timeout`` kept between IO_SECONDS_MIN and IO_SECONDS_MAX (the
        maximum when there is none, or it is 0)."""
        if not self.timeout:
            return IO_SECONDS_MAX
        return min(max(self.timeout, IO_SECONDS_MIN), IO_SECONDS_MAX)

    def updated(self, changes: Dict[str, Any]) -> 'PoolOptions':
        """A validated copy with ``changes`` applied (``_UNSET`` ignored)."""
        given = {k: v for k, v in changes.items() if v is not _UNSET}
        return replace(self, **given) if given else self


KEYWORDS = tuple(f.name for f in fields(PoolOptions))


def pop_options(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Take the pool's keywords out of ``kwargs`` (the rest go to peewee)."""
    return {k: kwargs.pop(k) for k in KEYWORDS if k in kwargs}
