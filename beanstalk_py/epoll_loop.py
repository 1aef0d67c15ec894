"""The epoll driver: one trio task serving every connection through an epoll set (Linux).

Measured on the 2-core test machine (issue 4): with 50 request/response
clients, one trio task per connection reached only 0.49x beanstalkd, because
waking a task costs at least 11 us per request; one task that waits on an
epoll fd with ``trio.lowlevel.wait_readable`` and then reads, runs and answers
every ready socket in one pass reached 1.14x.  So on Linux this driver serves
plain beanstalk listeners, and :mod:`.streams` serves the rest (TLS, other
systems).  What the two do with a connection is written once, in
:class:`~.dispatch.Dispatcher`; this module only moves bytes.

trio is imported only inside :meth:`EpollLoop.run`: before that the same loop
serves clients with :meth:`EpollLoop.serve_while`, without trio, while start-up
imports trio on another thread (startup.py).
"""

from __future__ import annotations

import select
import socket
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from .conn import IO_CHUNK, Connection
from .dispatch import RECV_SIZE, Dispatcher
from .listen import set_nodelay

if TYPE_CHECKING:
    import trio

_IN = select.EPOLLIN | select.EPOLLRDHUP
_OUT = select.EPOLLOUT
_READABLE = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
# Longest time the loop waits in its own epoll before waiting through trio.
# Measured (issue 4, prd-25x25): handing each idle moment to trio's scheduler
# cost more than the request itself; a short private wait first, and a
# checkpoint at least every millisecond under load so the timer and signal
# tasks run, kept request/response at 1.14x of one task per connection.
_SPIN_WAIT_NS = 2_000_000
_YIELD_EVERY_NS = 1_000_000
# Accepts per listener wake: bounded so a connection storm cannot starve
# the clients already connected (a design bound, not a measured optimum).
_ACCEPTS_PER_WAKE = 64
# Before trio runs (start-up), the loop waits at most this long, so it
# notices soon that the imports are done.
_STARTUP_POLL_S = 0.005


class _EpollSocket:
    """One connection's socket in the epoll set, and its unsent output."""

    __slots__ = ("sock", "fd", "conn", "pending", "mask", "loop", "dead")

    def __init__(self, sock: socket.socket, loop: "EpollLoop") -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.conn: Connection[Any] = loop.dispatcher.open(self.fd, self)
        self.pending: Optional[memoryview] = None  # output the kernel did not take yet
        self.mask = _IN
        self.loop = loop
        self.dead = False

    def wake(self) -> None:
        """The connection has output (a reserve finished waiting): send it soon."""
        self.loop.mark_dirty(self)

    def hang_up(self) -> None:
        """Close soon, unsent output dropped (the store lost the client's state)."""
        self.pending = None
        self.loop.mark_dirty(self)


class EpollLoop:
    """Accepts, reads, runs and writes for all connections of its listeners."""

    def __init__(
        self, dispatcher: Dispatcher, listeners: list[socket.socket], now_ns: Callable[[], int]
    ) -> None:
        self.dispatcher = dispatcher
        self.listeners = {sock.fileno(): sock for sock in listeners}
        self.now_ns = now_ns
        self.epoll = select.epoll()
        for fd in self.listeners:
            self.epoll.register(fd, select.EPOLLIN)
        # While trio is still being imported (startup.py), descriptors must stay
        # free for the imports: accepting stops at a client fd this high.
        self.fd_ceiling: Optional[int] = None
        self._listening = True
        self.sockets: dict[int, _EpollSocket] = {}
        # Connections with replies to send, in the order they got them.
        self.dirty: dict[_EpollSocket, None] = {}
        self._wait_scope: Optional[trio.CancelScope] = None

    def mark_dirty(self, client: _EpollSocket) -> None:
        self.dirty[client] = None
        if self._wait_scope is not None:
            self._wait_scope.cancel()  # woken from another task (the timer)

    # ------------------------------------------------------------------ without trio

    def serve_while(self, busy: Callable[[], bool], check: Callable[[], None]) -> None:
        """Serve, blocking, while ``busy()``; ``check()`` before each pass (start-up).

        Under -f 0 the fsync runs inline here: there is no trio to wait in.
        """
        while busy():
            check()
            self.serve_pass(_STARTUP_POLL_S)

    def serve_pass(self, timeout: float = 0.0) -> None:
        """One pass: wait up to ``timeout`` s (never past a timer), serve what is ready."""
        wake = self.dispatcher.store.next_wakeup()
        if wake is not None:
            timeout = max(0.0, min(timeout, (wake - self.now_ns()) / 1e9))
        self._handle(self.epoll.poll(timeout))
        if self.dirty:
            if self.dispatcher.must_sync():
                self.dispatcher.durability.sync()
            self._send_dirty()

    def close(self) -> None:
        """Close every connection and the epoll set."""
        now = self.now_ns()
        for client in list(self.sockets.values()):
            self._close(client, now)
        self.epoll.close()

    def _set_listening(self, on: bool) -> None:
        if on != self._listening:
            self._listening = on
            for fd in self.listeners:
                if on:
                    self.epoll.register(fd, select.EPOLLIN)
                else:
                    self.epoll.unregister(fd)

    # ------------------------------------------------------------------ under trio

    async def run(self) -> None:
        import trio  # see the module docstring

        self.fd_ceiling = None
        self._set_listening(True)
        epoll = self.epoll
        dispatcher = self.dispatcher
        store = dispatcher.store
        durability = dispatcher.durability
        now_ns = self.now_ns
        last_yield = now_ns()
        try:
            while True:
                if self.dirty:
                    events = epoll.poll(0)  # replies to send: do not wait
                else:
                    # First wait in our own epoll for a short slice (never
                    # past the store's next timer), then hand over to trio.
                    slice_ns = _SPIN_WAIT_NS
                    wake = store.next_wakeup()
                    if wake is not None:
                        slice_ns = max(0, min(slice_ns, wake - now_ns()))
                    events = epoll.poll(slice_ns / 1e9)
                    if not events:
                        with trio.CancelScope() as scope:
                            self._wait_scope = scope
                            await trio.lowlevel.wait_readable(epoll.fileno())
                        self._wait_scope = None
                        last_yield = now_ns()
                        continue
                self._handle(events)
                if self.dirty:
                    if dispatcher.must_sync():
                        await trio.to_thread.run_sync(durability.sync)
                        last_yield = now_ns()
                    self._send_dirty()
                if now_ns() - last_yield > _YIELD_EVERY_NS:
                    await trio.lowlevel.checkpoint()
                    last_yield = now_ns()
        finally:
            self.close()

    # ------------------------------------------------------------------ batches

    def _handle(self, events: list[tuple[int, int]]) -> None:
        """Due timers first, then every ready socket; replies are marked to send."""
        now = self.now_ns()
        dispatcher = self.dispatcher
        dispatcher.store.tick(now)
        sockets = self.sockets
        touched: list[_EpollSocket] = []
        for fd, mask in events:
            client = sockets.get(fd)
            if client is None:
                listener = self.listeners.get(fd)
                if listener is not None:
                    self._accept(listener)
                continue
            if mask & _OUT:
                self.flush(client)
            if mask & _READABLE:
                if client.dead:
                    continue
                conn = client.conn
                try:
                    # A big body streaming in: at most one IO_CHUNK straight
                    # into its buffer per pass (the socket stays readable, so
                    # the next pass comes back for more after serving the
                    # others).  Tested here (one attribute test in the usual
                    # case), with the lone reply sent whole in flush: measured
                    # (issue 12, put+reserve+delete over loopback through serve_pass,
                    # client in process, total CPU, min of 7 x 10,000 jobs)
                    # with the core's changes, pure 52.5 -> 47.5 us per job,
                    # compiled 42.3 -> 40.3 us.  Dispatcher.received is not
                    # inlined: the policy for a connection's bytes stays in one
                    # place for both drivers.
                    window = conn.body_window() if conn.parser.streaming_body else None
                    if window is None:
                        data = client.sock.recv(RECV_SIZE)
                    else:
                        count = client.sock.recv_into(window)
                        if count:
                            conn.body_received(count)
                            continue  # nothing to run before the body's last bytes
                        data = b""
                except BlockingIOError:
                    continue
                except OSError:
                    self._close(client, now)
                    continue
                if not dispatcher.received(conn, fd, data, now):
                    self._close(client, now)
                    continue
                touched.append(client)
        # Deliver reserves finished by this batch (wake() marks them dirty too).
        dispatcher.settle(now)
        dirty = self.dirty
        for client in touched:
            dirty[client] = None

    def _send_dirty(self) -> None:
        """Send the replies of every connection that has some, in order."""
        dirty = self.dirty
        self.dirty = {}
        for client in dirty:
            self.flush(client)

    def flush(self, client: _EpollSocket) -> None:
        """Send what the connection has; keep the rest for write readiness."""
        if client.dead:
            return
        conn = client.conn
        sock = client.sock
        while True:
            data: Union[bytes, memoryview, None] = client.pending
            if data is None:
                if not conn.out:
                    break
                # Sent as the bytes they are: a memoryview only to slice a big
                # piece or keep the rest of a partial send (the round trip's
                # lone reply goes whole; part of the 52.5 -> 47.5 us above).
                data = conn.take_chunk()
            try:
                # A big piece (a job body, see Connection.take_chunk) goes
                # out one IO_CHUNK slice per pass.
                sent = sock.send(data if len(data) <= IO_CHUNK else memoryview(data)[:IO_CHUNK])
            except BlockingIOError:
                sent = 0
            except OSError:
                self._close(client, self.now_ns())
                return
            if sent < len(data):
                # The rest on EPOLLOUT: at once in the next pass, after the
                # other sockets, if the kernel took a whole slice.
                client.pending = memoryview(data)[sent:]
                break
            client.pending = None
            if conn.resumable:
                if not self.dispatcher.output_sent(conn, client.fd, self.now_ns()):
                    self._close(client, self.now_ns())
                    return
                if conn.out and self.dispatcher.must_sync():
                    self.dirty[client] = None  # sent after the next fsync
                    break
        if conn.closing and client.pending is None and not conn.out and not conn.outstanding:
            self._close(client, self.now_ns())
            return
        self._update_mask(client)

    def _update_mask(self, client: _EpollSocket) -> None:
        mask = 0
        if client.conn.wants_input:
            mask |= _IN
        if client.pending is not None:
            mask |= _OUT
        if mask != client.mask:
            client.mask = mask
            self.epoll.modify(client.fd, mask)

    # ------------------------------------------------------------------ sockets

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(_ACCEPTS_PER_WAKE):
            try:
                sock, _addr = listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if self.dispatcher.accept_failed(listener, exc):
                    return
                continue
            if not self.dispatcher.admit():
                sock.close()  # over --max-connections: refused at once
                continue
            sock.setblocking(False)
            set_nodelay(sock)
            client = _EpollSocket(sock, self)
            self.sockets[client.fd] = client
            self.epoll.register(client.fd, _IN)
            if self.fd_ceiling is not None and client.fd >= self.fd_ceiling:
                self._set_listening(False)  # until a client leaves, or trio runs
                return

    def _close(self, client: _EpollSocket, now: int) -> None:
        if client.dead:
            return
        client.dead = True
        del self.sockets[client.fd]
        try:
            self.epoll.unregister(client.fd)
        except (OSError, ValueError):
            pass
        client.sock.close()
        if not self._listening and self.fd_ceiling is not None:
            self._set_listening(True)
        self.dispatcher.close(client.conn, client.fd, now)
