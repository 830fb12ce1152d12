"""A loopback TCP proxy that adds connect latency, simulates outages and
counts the bytes it forwards.

Used by the benchmark (``python -m playhouse_pool``) and the test suite:
point a database at ``127.0.0.1:proxy.port`` and it reaches the real server,
except as told otherwise::

    with LatencyProxy('127.0.0.1', 5432, connect_delay=0.1) as proxy:
        db = PooledPostgresqlDatabase('test', host='127.0.0.1',
                                      port=proxy.port)
        proxy.cut_all()       # every proxied connection drops now
        proxy.reset_all()     # ... and its client gets a reset (RST)
        proxy.hang(True)      # the network stops moving bytes
        proxy.refuse = True   # new clients are closed at once
        proxy.bytes_to_server # bytes forwarded client -> server, so far
        proxy.lose_replies()  # requests reach the server, replies are lost

Each client gets its own threads: one that waits ``connect_delay`` and
connects upstream, then pumps one direction, and one more that pumps the
other. All threads are daemons and ``stop()`` joins them.
"""
from __future__ import annotations

import selectors
import socket
import struct
import threading
import time
from types import TracebackType
from typing import Callable, List, Optional, Set, Type

_CHUNK = 65536
_JOIN_SECONDS = 15.0
_UPSTREAM_CONNECT_SECONDS = 10.0


class _Link:
    """One proxied client and, once connected, its upstream socket."""
    __slots__ = ('client', 'upstream', 'cut', 'pumps', 'lose_replies')

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.upstream: Optional[socket.socket] = None
        self.cut = False
        self.pumps = 0
        self.lose_replies = False

    def shut(self) -> None:
        # shutdown() rather than close(): it wakes a thread blocked in recv()
        # on the same socket, and the fd stays valid until its pump is done.
        self.cut = True
        for sock in (self.client, self.upstream):
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            if sock is not None:
                sock.close()


class LatencyProxy:
    """Forwards ``listen_host:port`` to ``target_host:target_port``.

    ``connect_delay`` (seconds, settable at any time) delays each new
    upstream connection; clients wait in parallel, so N simultaneous
    connects take about one delay. ``refuse`` (settable) closes new clients
    at once; ``hang(True)`` stops all traffic and upstream connects until
    ``hang(False)``; ``cut_all()`` drops every proxied connection,
    ``reset_all()`` too, with a reset to each client; after
    ``lose_replies()`` what the server sends on a connection open then is
    dropped and the connection cut: the client's request reached the server,
    the client sees an EOF instead of the reply. ``bytes_to_server`` and
    ``bytes_to_client`` count the bytes forwarded each way, over all
    connections, since ``start()``.
    """

    def __init__(self, target_host: str, target_port: int,
                 connect_delay: float = 0.0,
                 listen_host: str = '127.0.0.1') -> None:
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.connect_delay = connect_delay
        self.refuse = False
        self.port = 0
        self._cond = threading.Condition()
        self._hung = False
        self._stopped = False
        self._links: Set[_Link] = set()
        self._threads: Set[threading.Thread] = set()
        self._listener: Optional[socket.socket] = None
        self._wakeup: Optional[List[socket.socket]] = None
        self._sent = {True: 0, False: 0}    # to the server? -> bytes

    # -- Control ------------------------------------------------------------

    def start(self) -> LatencyProxy:
        """Listen on an ephemeral port (``self.port``) and start accepting."""
        if self._listener is not None or self._stopped:
            raise RuntimeError('LatencyProxy can be started only once')
        listener = socket.create_server((self.listen_host, 0), backlog=128)
        self._listener = listener
        self._wakeup = list(socket.socketpair())
        self.port = listener.getsockname()[1]
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        """Close the listener and every connection; wait for the threads."""
        with self._cond:
            if self._stopped or self._listener is None:
                self._stopped = True
                return
            self._stopped = True
            self._shut_links()
            self._cond.notify_all()
        assert self._wakeup is not None
        self._wakeup[1].send(b'x')      # wakes the accept loop's select()
        self._join_threads()
        for sock in [self._listener, *self._wakeup]:
            sock.close()

    def cut_all(self) -> None:
        """Abruptly drop every proxied connection, both sides, now."""
        with self._cond:
            self._shut_links()
            self._cond.notify_all()

    def reset_all(self) -> None:
        """As ``cut_all()``, but each client gets a reset (RST), as from a
        host that went away or a middlebox that forgot the connection: its
        next send fails."""
        with self._cond:
            for link in self._links:
                # Linger 0: the close that ends the link sends the reset.
                link.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack('ii', 1, 0))
            self._shut_links()
            self._cond.notify_all()

    def lose_replies(self) -> None:
        """From now on, the server's replies on every connection open now
        are dropped, and the connection cut at the first one."""
        with self._cond:
            for link in self._links:
                link.lose_replies = True

    def hang(self, on: bool) -> None:
        """While on, accept clients but connect none upstream and forward
        no bytes, and reset nothing: a blackhole, as a route that vanished
        or a host that went silent. Off: everything held resumes, as TCP's
        retransmissions deliver it once the route is back."""
        with self._cond:
            self._hung = bool(on)
            self._cond.notify_all()

    @property
    def connections(self) -> int:
        """How many clients are connected to the proxy right now."""
        with self._cond:
            return len(self._links)

    @property
    def bytes_to_server(self) -> int:
        """Bytes forwarded from clients to the server so far."""
        with self._cond:
            return self._sent[True]

    @property
    def bytes_to_client(self) -> int:
        """Bytes forwarded from the server to clients so far."""
        with self._cond:
            return self._sent[False]

    def __enter__(self) -> LatencyProxy:
        return self.start()

    def __exit__(self, exc_type: Optional[Type[BaseException]],
                 exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.stop()

    def __repr__(self) -> str:
        return '<LatencyProxy %s:%d -> %s:%d delay=%.3fs>' % (
            self.listen_host, self.port, self.target[0], self.target[1],
            self.connect_delay)

    # -- Threads --------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True,
                                  name='LatencyProxy-%d' % self.port)
        with self._cond:
            # Started under the lock, so stop() never sees an unstarted one.
            self._threads = {t for t in self._threads if t.is_alive()}
            self._threads.add(thread)
            thread.start()

    def _join_threads(self) -> None:
        # A pump may start a sibling while we join, hence the loop; the
        # deadline only matters if an upstream connect is stuck in the kernel.
        deadline = time.monotonic() + _JOIN_SECONDS
        while time.monotonic() < deadline:
            with self._cond:
                alive = [t for t in self._threads if t.is_alive()]
                self._threads = set(alive)
            if not alive:
                return
            for thread in alive:
                thread.join(max(deadline - time.monotonic(), 0.0))

    def _accept_loop(self) -> None:
        assert self._listener is not None and self._wakeup is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wakeup[0], selectors.EVENT_READ)
            while True:
                selector.select()
                with self._cond:
                    if self._stopped:
                        return
                try:
                    client, _ = self._listener.accept()
                except OSError:
                    # Out of descriptors, or the client gave up: pause
                    # rather than spin on a listener that stays readable.
                    time.sleep(0.01)
                    continue
                self._admit(client)

    def _admit(self, client: socket.socket) -> None:
        if self.refuse:
            # Linger 0: the client sees a reset, as from a server going down.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                              struct.pack('ii', 1, 0))
            client.close()
            return
        link = _Link(client)
        with self._cond:
            if self._stopped:
                client.close()
                return
            self._links.add(link)
            link.pumps = 2
        self._spawn(self._serve, link, self.connect_delay)

    def _serve(self, link: _Link, delay: float) -> None:
        """Delay, connect upstream, then pump upstream -> client."""
        if not self._connect_upstream(link, delay):
            self._pump_done(link, count=2)
            return
        assert link.upstream is not None
        self._spawn(self._pump, link, link.client, link.upstream)
        self._pump(link, link.upstream, link.client)

    def _connect_upstream(self, link: _Link, delay: float) -> bool:
        with self._cond:
            self._cond.wait_for(lambda: link.cut or not self._hung)
            # The delay is waited on the condition, so cut_all() and stop()
            # end it early instead of leaving a thread asleep.
            if delay > 0:
                self._cond.wait_for(lambda: link.cut, delay)
            self._cond.wait_for(lambda: link.cut or not self._hung)
            if link.cut:
                return False
        try:
            upstream = socket.create_connection(self.target,
                                                _UPSTREAM_CONNECT_SECONDS)
        except OSError:
            return False
        upstream.settimeout(None)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link.client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._cond:
            link.upstream = upstream
            if link.cut:            # cut while we were connecting
                link.shut()
                return False
        return True

    def _pump(self, link: _Link, src: socket.socket,
              dst: socket.socket) -> None:
        to_server = src is link.client
        try:
            while True:
                data = src.recv(_CHUNK)
                if not data or not self._flowing(link, src):
                    break
                # Counted before it is sent: by the time the far side
                # has the bytes (or its answer to them), they are counted.
                with self._cond:
                    self._sent[to_server] += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # Either side ending ends the link (no half-closed connections:
            # database protocols never use them).
            with self._cond:
                link.shut()
            self._pump_done(link)

    def _flowing(self, link: _Link, src: socket.socket) -> bool:
        """Wait out a hang; then True if what ``src`` sent goes on; False
        if the link was cut meanwhile, or ``src`` is the server and its
        replies are lost."""
        with self._cond:
            self._cond.wait_for(lambda: link.cut or not self._hung)
            if link.cut:
                return False
            return src is not link.upstream or not link.lose_replies

    def _pump_done(self, link: _Link, count: int = 1) -> None:
        with self._cond:
            link.pumps -= count
            if link.pumps > 0:
                return
            self._links.discard(link)
        link.close()

    def _shut_links(self) -> None:
        # Under the condition's lock.
        for link in self._links:
            link.shut()


__all__ = ['LatencyProxy']
