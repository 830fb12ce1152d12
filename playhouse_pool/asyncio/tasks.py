"""Tasks as the pool sees them: who holds a connection (:class:`TaskOwner`,
the core's ``records.Owner`` for a task) and pwasyncio's per-task
connection state with the one thing the face adds (:class:`TaskStates`).
"""
import asyncio
import types
from typing import Any, Callable, Coroutine, Optional

from playhouse.pwasyncio import _ConnectionState

_running_loop = asyncio.events._get_running_loop
_current_tasks = getattr(asyncio.tasks, '_current_tasks', None)


def _current_task_in_python() -> Optional['asyncio.Task[Any]']:
    """``asyncio.current_task()``'s two lookups without its Python layers:
    before 3.12 it is a Python function, and every statement asks, through
    pwasyncio's per-task state."""
    return _current_tasks.get(_running_loop())  # type: ignore


current_task: Callable[[], Optional['asyncio.Task[Any]']] = (
    asyncio.current_task      # in C from Python 3.12
    if isinstance(asyncio.current_task, types.BuiltinFunctionType)
    or _current_tasks is None else _current_task_in_python)


class TaskOwner:
    """The task holding a checked-out connection: its ``name`` (for
    messages and leak reports) and whether it ``is_alive()`` (not done;
    the housekeeper's scan for dead holders). One per checkout."""
    __slots__ = ('task',)
    kind = 'task'               # in messages: "held by task 'Task-3'"

    def __init__(self, task: Optional['asyncio.Task[Any]']) -> None:
        assert task is not None     # pwasyncio's hooks run in a task
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

    def _current(self) -> Any:
        """pwasyncio's state of the current task: the one its context
        holds, if it is this task's (the common case: every property of
        the state, several times per statement, comes here); else
        pwasyncio's own lookup, which registers the task."""
        # current_task(), inlined where it is Python (before 3.12).
        task = (_current_tasks.get(_running_loop())  # type: ignore
                if current_task is _current_task_in_python
                else current_task())
        try:
            state = self._cv.get()
        except LookupError:
            state = None
        if state is not None and state._task is task:
            tid = state._task_id
            if tid not in self._states:     # close_pool() cleared them
                self._states[tid] = state
            return state
        return super()._current()

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
