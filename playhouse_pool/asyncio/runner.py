"""Where the asyncio face's background work runs: tasks on the pool's
event loop (docs/design.rst, rule 8), as workers.py runs it on threads for
the thread face.

* :class:`JobRunner` runs each job (jobs.py) as a task: its I/O awaited,
  its outcome reported to the ledger, its first follow-up run in the same
  task (a replacement's connect after its close, a retry after its
  delay), the others in tasks of their own. So 16 connects run at once.
* :class:`HousekeeperTask` runs the housekeeper's rounds
  (housekeeping.py) whenever something is due.

The loop keeps only weak references to tasks: the runner keeps its own.
"""
import asyncio
import logging
import time
import weakref
from typing import Any, List, Optional, Set

from ..housekeeping import MAX_TICK, Housekeeping
from ..jobs import Job, Jobs, OpenConnection
from .opening import AsyncOpener

logger = logging.getLogger('playhouse_pool')


async def run_once(job: Job, io: AsyncOpener) -> Jobs:
    """Await ``job``'s I/O and publish its outcome; returns its
    follow-ups. (An open job of a pool closed since does not run.)"""
    if isinstance(job, OpenConnection) and not job.current:
        return job.ledger.open_cancelled(job, time.monotonic())
    began = time.monotonic()
    try:
        result, error = await job.call(io), None
    except Exception as exc:
        result, error = None, exc
    return job.report(io, result, error, began, time.monotonic())


class JobRunner:
    """Runs one pool's jobs as tasks on ``loop``. ``submit`` may be called
    from any thread: from another, the loop starts the tasks."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 io: AsyncOpener) -> None:
        self.loop = loop
        self.io = io
        self.tasks: Set['asyncio.Task[None]'] = set()
        # Set by stop(): connect retries waiting out their backoff go on at
        # once (as work of a pool closed since, they then do nothing).
        self._stopping: 'asyncio.Future[None]' = loop.create_future()

    def submit(self, jobs: Jobs) -> None:
        if not jobs:
            return
        if asyncio._get_running_loop() is self.loop:
            self._start(jobs)
            return
        try:
            self.loop.call_soon_threadsafe(self._start, list(jobs))
        except RuntimeError:
            # The loop is closed: the pool's next use, on another loop,
            # starts it afresh (pool.py), and these jobs' books with it.
            logger.debug('playhouse_pool dropped %d job(s) of a closed '
                         'event loop.', len(jobs))

    def _start(self, jobs: List[Job]) -> None:
        for job in jobs:
            task = self.loop.create_task(self._run(job))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def stop(self) -> None:
        """close_all(): retries waiting out a backoff go on now."""
        stopping, self._stopping = self._stopping, self.loop.create_future()
        stopping.set_result(None)

    async def _run(self, job: Job) -> None:
        try:
            while True:
                if job.delay:
                    await asyncio.wait({self._stopping}, timeout=job.delay)
                    job.delay = 0.0
                follow = await run_once(job, self.io)
                if not follow:
                    return
                job = follow[0]
                self.submit(follow[1:])
        except Exception:              # a bug: log it, never lose it
            logger.exception('playhouse_pool failed on a %s job.', job.kind)


class HousekeeperTask:
    """A task that runs a round whenever something is due. Holds its
    pool's housekeeping by a weak reference while it sleeps: a forgotten
    pool is collected and the task ends."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 housekeeping: Housekeeping) -> None:
        self.loop = loop
        self._housekeeping = weakref.ref(housekeeping)
        self._task: Optional['asyncio.Task[None]'] = None
        self._sleep: Optional['asyncio.Future[None]'] = None

    def start(self) -> None:
        self._task = self.loop.create_task(self._run())

    def wake(self) -> None:
        """Plan again now (the options changed)."""
        sleep = self._sleep
        if sleep is None:
            return
        if asyncio._get_running_loop() is self.loop:
            _resolve(sleep)
        else:
            self.loop.call_soon_threadsafe(_resolve, sleep)

    def stop(self) -> None:
        task = self._task
        if task is not None and not self.loop.is_closed():
            if asyncio._get_running_loop() is self.loop:
                task.cancel()
            else:
                self.loop.call_soon_threadsafe(task.cancel)

    async def _run(self) -> None:
        while True:
            housekeeping = self._housekeeping()
            if housekeeping is None:
                return
            try:
                interval = housekeeping.run_round(time.monotonic())
            except Exception:
                logger.exception('playhouse_pool housekeeping failed.')
                interval = MAX_TICK
            del housekeeping    # no strong reference while asleep
            self._sleep = sleep = self.loop.create_future()
            timer = self.loop.call_later(interval, _resolve, sleep)
            try:
                await sleep
            finally:
                timer.cancel()
                self._sleep = None


def _resolve(future: 'asyncio.Future[Any]') -> None:
    if not future.done():
        future.set_result(None)
