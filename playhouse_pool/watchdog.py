"""The thread face's bound on the pool's own I/O (docs/design.rst,
rule 9): each connect, ping, rollback, reset and close a pool worker (or a
check-in) runs is watched, and one past its deadline has its connection's
socket shut down, so that the driver call blocked on a silent host fails at
once. What cannot be cut short is reported to the ledger as overdue.
"""
import math
import os
import socket
import threading
import time
from typing import Any, Callable, List, Optional, Set

from .jobs import Job


class Socket:
    """A connection's socket, as seen when the pool's I/O on it began: the
    descriptor and the socket's identity (its inode), so that a descriptor
    the driver closed meanwhile, and the system gave to another socket, is
    never shut down. Taken on the thread that does the I/O: a driver may
    refuse questions from other threads while a call runs (mysqlclient)."""
    __slots__ = ('fd', 'inode')

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.inode = os.fstat(fd).st_ino

    def shut_down(self) -> bool:
        """``shutdown(2)`` it both ways, through a duplicate descriptor
        (closed here; the driver's stays open for its own close): whoever
        blocks reading or writing it wakes with an EOF or an error. False if
        it is not there any more."""
        try:
            if os.fstat(self.fd).st_ino != self.inode:
                return False
            sock = socket.fromfd(self.fd, socket.AF_INET, socket.SOCK_STREAM)
        except OSError:
            return False
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:         # not connected: nothing blocks on it
            pass
        finally:
            sock.close()
        return True


def socket_of(fd: Optional[int]) -> Optional[Socket]:
    """The socket with descriptor ``fd``, or None (none, or not open)."""
    if fd is None or fd < 0:
        return None
    try:
        return Socket(fd)
    except OSError:
        return None


class Watch:
    """One piece of the pool's own I/O under way: a connect (its socket
    attached once the driver returns the connection), a ping, a rollback or
    reset, a close; and when it must have ended. Used as a context manager
    around the I/O: once the block is left, ``cut`` says for good whether
    the watchdog shut the connection's socket down (then the connection is
    not to be trusted, whatever the driver call returned)."""
    __slots__ = ('_watchdog', 'socket', 'seconds', 'deadline', 'job', 'late',
                 'cut')

    def __init__(self, watchdog: 'Watchdog', sock: Optional[Socket],
                 seconds: float, job: Optional[Job]) -> None:
        self._watchdog = watchdog
        self.socket = sock            # None: nothing to cut short
        self.seconds = seconds
        self.deadline = math.inf      # set when armed
        self.job = job                # the worker's job it is part of
        self.late = False             # past its deadline, and handled
        self.cut = False              # its socket was shut down

    def attach(self, sock: Optional[Socket]) -> None:
        """The connect returned its connection, whose socket this is: what
        follows on it (server version, ``configure``) can be cut short."""
        self._watchdog.attach(self, sock)

    def __enter__(self) -> 'Watch':
        return self

    def __exit__(self, *exc: Any) -> None:
        self._watchdog.done(self)


def _nothing() -> None:
    pass


class Watchdog:
    """The pool's own I/O under way, each piece with its deadline
    (docs/design.rst, rule 9). The housekeeper checks them when the first
    deadline comes (``check``). One past it has its connection's socket
    shut down (a ``shutdown(2)`` of a duplicate of the descriptor; the
    driver's own stays open for its close): the driver call blocked on it
    fails at once, and its job reports back and frees or reuses its slot.
    Every driver here fails that way (psycopg2, psycopg 3, pymysql,
    mysqlclient, mysql-connector, MariaDB Connector;
    tests/test_silence.py). It is the one bound that works for each: libpq
    has no read timeout at all, and the MySQL drivers' read timeouts are
    set per connection, the user's to choose.

    What has no socket to shut (a connect before the driver returns one, a
    driver that shows none) cannot be cut short: its job is marked overdue
    in the ledger. Waiters stop counting on it and get connects of their
    own where slots are free; its own slot stays held until it ends (the
    connection may exist on the server). Connects are bounded by the
    driver's own timeout, which the pool sets where the user did not
    (opening.py): the watch is the backstop. Each piece past its deadline
    counts in ``pool_stats()['io_timeouts']``.
    """

    def __init__(self) -> None:
        # Reentrant: a signal handler may check out (ping_after=0 watches
        # its ping) on a thread that holds it.
        self._lock = threading.RLock()
        self._watches: Set[Watch] = set()
        # The job the worker on this thread runs: its watches are its.
        self._local = threading.local()
        # When the housekeeper checks next: no deadline is earlier.
        self.next_check = math.inf
        # Wakes the housekeeper (set by the pool when one starts).
        self.wake: Callable[[], None] = _nothing

    def on_behalf(self, job: Optional[Job]) -> None:
        """This worker thread runs ``job`` (None: no job any more)."""
        self._local.job = job

    def watch(self, sock: Optional[Socket], seconds: float) -> Watch:
        """Watch I/O on ``sock`` (None: none to cut, a connect say) that
        must end within ``seconds``; use it as a context manager around the
        I/O."""
        watch = Watch(self, sock, seconds, getattr(self._local, 'job', None))
        with self._lock:
            self._watches.add(watch)
            wake = self._arm(watch)
        if wake:
            self.wake()
        return watch

    def _arm(self, watch: Watch) -> bool:
        # Its deadline from now; True if the housekeeper must wake for it
        # (it planned to check later). With one limit for every piece,
        # deadlines come in order: only the first after a quiet spell
        # wakes it, however busy the pool.
        watch.deadline = time.monotonic() + watch.seconds
        watch.late = False
        if watch.deadline >= self.next_check:
            return False
        self.next_check = watch.deadline
        return True

    def attach(self, watch: Watch, sock: Optional[Socket]) -> None:
        with self._lock:
            watch.socket = sock
            # A connect that came after its deadline: what follows on the
            # connection gets a deadline of its own.
            wake = watch.late and self._arm(watch)
        if wake:
            self.wake()

    def done(self, watch: Watch) -> None:
        with self._lock:
            self._watches.discard(watch)

    def check(self, now: float,
              overdue: Callable[[List[Optional[Job]], int], None]) -> None:
        """Cut short what is past its deadline; tell the ledger
        (``overdue``) of each, and of the jobs that could not be cut short."""
        with self._lock:
            if now < self.next_check:
                return
            late = [w for w in self._watches
                    if not w.late and w.deadline <= now]
            for watch in late:
                watch.late = True
                if watch.socket is not None:
                    watch.cut = watch.socket.shut_down()
            self.next_check = min((w.deadline for w in self._watches
                                   if not w.late), default=math.inf)
            if not late:
                return
            # Under this lock: none of these has reported back yet.
            overdue([w.job for w in late if not w.cut], len(late))

    def lateness(self, now: float) -> float:
        """How long past its deadline the latest piece still under way is
        (0.0: none is)."""
        with self._lock:
            return max([now - w.deadline for w in self._watches]
                       + [0.0])
