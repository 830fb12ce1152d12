"""execution_context(): a block that runs on a pooled connection of its own."""
import functools
import os
import threading
from typing import Any, Callable, List, TypeVar

F = TypeVar('F', bound=Callable[..., Any])


class ExecutionContext:
    """Run a block on its own pooled connection, not the thread's current one.

    On entry the thread's connection state is set aside and a connection is
    checked out; with ``with_transaction`` the block runs in ``atomic()``
    (commit on success, rollback on an exception). On exit the connection is
    checked in and the thread's previous state (its connection, open or not,
    and its transactions) is put back exactly. Blocks nest, each with its own
    connection. As a decorator, every call gets a context of its own.
    """

    def __init__(self, database: Any, with_transaction: bool = True) -> None:
        self.database = database
        self.with_transaction = with_transaction
        # One stack per thread: an object may be shared by threads, and
        # entered again while active.
        self._local = threading.local()

    def __enter__(self) -> Any:
        db = self.database
        saved = dict(db._state.__dict__)
        pid = os.getpid()
        db._state.reset()
        txn = None
        try:
            db.connect()
            if self.with_transaction:
                txn = db.atomic()
                txn.__enter__()
        except BaseException:
            self._leave(saved, pid)
            raise
        self._frames().append((saved, txn, pid))
        return db

    def _frames(self) -> List[tuple]:
        frames = getattr(self._local, 'frames', None)
        if frames is None:
            frames = self._local.frames = []
        return frames

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        saved, txn, pid = self._frames().pop()
        try:
            # In a child forked inside the block the transaction is the
            # parent's: neither committed nor rolled back here.
            if txn is not None and pid == os.getpid():
                txn.__exit__(exc_type, exc, tb)
        finally:
            self._leave(saved, pid)

    def _leave(self, saved: dict, pid: int) -> None:
        db = self.database
        try:
            if not db.is_closed():
                # Whatever the block left open is rolled back at check-in.
                db._state.transactions = []
                db.close()
        finally:
            if pid != os.getpid():
                # Forked inside the block: the connection set aside, and its
                # transactions, are the parent's. The child gets the state
                # back without them, as the fork left the thread's own (see
                # shutdown.forget_connections).
                saved.update(closed=True, conn=None, transactions=[])
            # One C call puts every key back, then the block's own go: a
            # signal handler between them still finds a whole state.
            state = db._state.__dict__
            state.update(saved)
            for key in [k for k in state if k not in saved]:
                del state[key]

    def __call__(self, fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            with ExecutionContext(self.database, self.with_transaction):
                return fn(*args, **kwargs)
        return inner  # type: ignore[return-value]

