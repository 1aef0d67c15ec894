"""One trio task serving every connection through an epoll set (Linux).

Measured on the 2-core test machine (issue 4): with 50 request/response
clients, one trio task per connection reached only 0.49x beanstalkd, because
waking a task costs at least 11 us per request; one task that waits on an
epoll fd with ``trio.lowlevel.wait_readable`` and then reads, runs and answers
every ready socket in one pass reached 1.14x.  So on Linux this loop serves
the connections, and :mod:`.server`'s task-per-connection path stays as the
portable one.  The protocol logic is the same sans-IO
:class:`~.conn.Connection` either way; this module only moves bytes.

trio is imported only inside :meth:`EpollLoop.run`: the loop is built, and
serves clients through :meth:`EpollLoop.serve_ready`, while trio is still
being imported at start-up (early.py).
"""

from __future__ import annotations

import select
import socket
from typing import TYPE_CHECKING, Callable, Optional

from .conn import Connection
from .listen import set_nodelay
from .options import report_internal_error

if TYPE_CHECKING:
    import trio

    from .hub import Hub

RECV_SIZE = 65536
_IN = select.EPOLLIN | select.EPOLLRDHUP
_OUT = select.EPOLLOUT
_READABLE = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
# Longest time the loop waits in its own epoll before waiting through trio.
_SPIN_WAIT_NS = 2_000_000
_YIELD_EVERY_NS = 1_000_000


class _Client:
    """I/O state of one connection in the epoll set."""

    __slots__ = ("sock", "fd", "conn", "pending", "mask", "loop", "dead")

    def __init__(self, sock: socket.socket, conn: Connection, loop: "EpollLoop") -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.conn = conn
        self.pending: Optional[memoryview] = None  # output the kernel did not take yet
        self.mask = _IN
        self.loop = loop
        self.dead = False

    def wake(self) -> None:
        """The engine finished this client's reserve: send the reply soon."""
        self.loop.mark_dirty(self)


class EpollLoop:
    """Accepts, reads, runs and writes for all connections of one server."""

    def __init__(self, hub: "Hub", now_ns: Callable[[], int]) -> None:
        self.hub = hub
        self.engine = hub.engine
        self.listeners = {sock.fileno(): sock for sock in hub.listeners}
        self.now_ns = now_ns
        self.epoll = select.epoll()
        for fd in self.listeners:
            self.epoll.register(fd, select.EPOLLIN)
        # While trio is still being imported (early.py), descriptors must stay
        # free for the imports: accepting stops at a client fd this high.
        self.fd_ceiling: Optional[int] = None
        self._listening = True
        self.clients: dict[int, _Client] = {}
        # Connections with replies to send, in the order they got them.
        self.dirty: dict[_Client, None] = {}
        self._wait_scope: Optional[trio.CancelScope] = None

    def mark_dirty(self, client: _Client) -> None:
        self.dirty[client] = None
        if self._wait_scope is not None:
            self._wait_scope.cancel()  # woken from another task (the timer)

    def _must_sync(self) -> bool:
        """Under -f 0 no reply leaves before the records it acknowledges are fsynced."""
        wal = self.engine.wal
        return wal is not None and wal.fsync_always and wal.written > wal.durable

    def serve_ready(self) -> None:
        """One pass that never blocks: due timers, ready sockets, replies out.

        Used at start-up before trio runs (early.py); -f 0 fsyncs inline here.
        """
        events = self.epoll.poll(0)
        if events:
            self._handle(events)  # runs due timers first
        else:
            now = self.now_ns()
            self.engine.tick(now)
            self.hub.settle(now)
        if self.dirty:
            if self._must_sync():
                self.engine.wal.sync()
            self._send_dirty()

    def close(self) -> None:
        """Close every connection and the epoll set."""
        now = self.now_ns()
        for client in list(self.clients.values()):
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

    async def run(self) -> None:
        import trio  # see the module docstring

        self.fd_ceiling = None
        self._set_listening(True)
        epoll = self.epoll
        engine = self.engine
        now_ns = self.now_ns
        last_yield = now_ns()
        try:
            while True:
                if self.dirty:
                    events = epoll.poll(0)  # replies to send: do not wait
                else:
                    # Measured: going back to trio's scheduler to wait costs more
                    # than the request itself when clients answer in tens of us,
                    # so first wait in our own epoll for a short slice (never
                    # past the engine's next timer), then hand over to trio.
                    slice_ns = _SPIN_WAIT_NS
                    wake = engine.next_wakeup()
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
                if events:
                    self._handle(events)
                if self.dirty:
                    if self._must_sync():
                        await trio.to_thread.run_sync(engine.wal.sync)
                        last_yield = now_ns()
                    self._send_dirty()
                # Let the timer and signal tasks run at least every millisecond.
                if now_ns() - last_yield > _YIELD_EVERY_NS:
                    await trio.lowlevel.checkpoint()
                    last_yield = now_ns()
        finally:
            self.close()

    # ------------------------------------------------------------------ batches

    def _handle(self, events: list[tuple[int, int]]) -> None:
        now = self.now_ns()
        engine = self.engine
        engine.tick(now)
        clients = self.clients
        touched: list[_Client] = []
        for fd, mask in events:
            client = clients.get(fd)
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
                try:
                    data = client.sock.recv(RECV_SIZE)
                except BlockingIOError:
                    continue
                except OSError:
                    self._close(client, now)
                    continue
                try:
                    if data:
                        client.conn.receive_data(data, now)
                    else:
                        client.conn.receive_eof(now)
                except Exception:  # a bug must cost one connection, not the server
                    report_internal_error(client.fd)
                    self._close(client, now)
                    continue
                touched.append(client)
        # Deliver reserves finished by this batch (wake() marks them dirty too).
        self.hub.settle(now)
        dirty = self.dirty
        for client in touched:
            dirty[client] = None

    def _send_dirty(self) -> None:
        """Send the replies of every connection that has some, in order."""
        dirty = self.dirty
        self.dirty = {}
        for client in dirty:
            self.flush(client)

    def flush(self, client: _Client) -> None:
        """Send what the connection has; keep the rest for write readiness."""
        if client.dead:
            return
        conn = client.conn
        sock = client.sock
        while True:
            data = client.pending
            if data is None:
                if not conn.out:
                    break
                data = memoryview(conn.take_output())
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._close(client, self.now_ns())
                return
            if sent < len(data):
                client.pending = data[sent:]
                break
            client.pending = None
            if conn.held_back and not conn.out and not conn.blocked and not conn.closing:
                # Output drained: run commands held back by the high-water mark.
                now = self.now_ns()
                try:
                    conn.process(now)
                except Exception:
                    report_internal_error(client.fd)
                    self._close(client, now)
                    return
                self.hub.settle(now)
                if conn.out and self._must_sync():
                    self.dirty[client] = None  # sent after the next fsync
                    break
        if conn.closing and client.pending is None and not conn.out:
            self._close(client, self.now_ns())
            return
        self._update_mask(client)

    def _update_mask(self, client: _Client) -> None:
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
        for _ in range(64):
            try:
                sock, _addr = listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if self.hub.accept_failed(listener, exc):
                    return
                continue
            sock.setblocking(False)
            set_nodelay(sock)
            conn = Connection(self.engine, self.hub.info)
            client = _Client(sock, conn, self)
            conn.io = client
            self.clients[client.fd] = client
            self.epoll.register(client.fd, _IN)
            if self.hub.verbose:
                print(f"accept {client.fd}", flush=True)
            if self.fd_ceiling is not None and client.fd >= self.fd_ceiling:
                self._set_listening(False)  # until a client leaves, or trio runs
                return

    def _close(self, client: _Client, now: int) -> None:
        if client.dead:
            return
        client.dead = True
        del self.clients[client.fd]
        try:
            self.epoll.unregister(client.fd)
        except (OSError, ValueError):
            pass
        client.conn.close(now)
        client.sock.close()
        if not self._listening and self.fd_ceiling is not None:
            self._set_listening(True)
        if self.hub.verbose:
            print(f"close {client.fd}", flush=True)
        self.hub.settle(now)
