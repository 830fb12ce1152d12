"""Tasks as the pool sees them: who holds a connection (:class:`TaskOwner`,
the core's ``records.Owner`` for a task) and pwasyncio's per-task
connection state with the one thing the face adds (:class:`TaskStates`).
"""
import asyncio
from typing import Any, Callable, Coroutine

from playhouse.pwasyncio import _ConnectionState


class TaskOwner:
    """The task holding a checked-out connection: its ``name`` (for
    messages and leak reports) and whether it ``is_alive()`` (not done;
    the housekeeper's scan for dead holders). One per checkout."""
    __slots__ = ('task',)

    def __init__(self, task: 'asyncio.Task[Any]') -> None:
        self.task = task

    @property
    def name(self) -> str:
        return self.task.get_name()

    def is_alive(self) -> bool:
        return not self.task.done()


class TaskStates(_ConnectionState):
    """pwasyncio's state per task (its connection, transactions, ...).
    ``release`` is called with the connection of a task that ended
    without ``aclose()`` (pwasyncio's task-done callback): the pool
    reclaims it."""

    def __init__(self, release: Callable[[Any], Coroutine[Any, Any, None]]
                 ) -> None:
        super().__init__(release=release)

    def drop_connection(self) -> None:
        """This task no longer holds its connection (its transactions and
        blocks stay, as peewee's stale-connection path keeps them)."""
        state = self._current()
        state.conn = None
        state.closed = True

    def forget_tasks(self) -> None:
        """The event loop whose tasks these states were of is gone."""
        self._states.clear()
        self._orphaned_conns.clear()
        self._release_tasks.clear()
